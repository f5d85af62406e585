"""`repoforge image`: the context's install steps pass in a clean virtual environment. Each `RUN ... pip install`
line of the Dockerfile runs as written (the `python3` of the image replaced by a fresh venv's python, the paths
the Dockerfile copied to replaced by their sources in the context), from the package registry; pip's own cache
makes it quick (`--no-cache-dir`, right for an image layer, is dropped for that reason only)."""

from __future__ import annotations

import os
import shlex
import subprocess
import venv
from pathlib import Path

import pytest
from deploy_helpers import _declare, _ts_spec, _without_installed_repoforge

from repoforge.build import build
from repoforge.deploy.image import write_image

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _steps(context: Path) -> tuple[dict[str, Path], list[list[str]]]:
    """(image path → context source for every COPY, the argv of every RUN)."""
    copies: dict[str, Path] = {}
    runs: list[list[str]] = []
    for line in (context / "Dockerfile").read_text().splitlines():
        words = shlex.split(line) if line.strip() and not line.startswith("#") else []
        if words[:1] == ["COPY"]:
            *sources, dest = words[1:]
            for src in sources:
                copies[dest.rstrip("/") + "/" + Path(src).name if dest.endswith("/") else dest] = context / src
        elif words[:1] == ["RUN"]:
            runs.append(words[1:])
    return copies, runs


def _built(kind: str, root: Path) -> tuple[Path, str]:
    """(the build, what its image's Python must then import): a Triton build with declared packages, or a
    TorchServe build as it is (its ONNX model declares onnxruntime; the image's `python`, not `python3`)."""
    if kind == "torchserve":
        b = build(_ts_spec(root), root / "repo", target="torchserve", device="cpu").output
        return b, "import onnxruntime"
    b = build(ROOT / "examples" / "tabular" / "spec.yaml", root / "repo", device="gpu").output
    _declare(_without_installed_repoforge(b), {"classifier": ["onnxruntime", "numpy<2"], "features": ["redis"]})
    return b, "import onnxruntime, redis, numpy; assert numpy.__version__ < '2'"


@pytest.mark.parametrize("kind", ["triton", "torchserve"])
def test_image_install_steps_pass_in_a_clean_venv(tmp_path: Path, kind: str) -> None:
    b, check = _built(kind, tmp_path)
    ctx = write_image(b, tmp_path / "ctx").output
    assert ctx is not None
    copies, runs = _steps(ctx)
    assert copies and all(src.exists() for src in copies.values())
    pip_runs = [r for r in runs if r[1:4] == ["-m", "pip", "install"]]
    assert pip_runs and len(pip_runs) == len(runs)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the venv's own packages
    for run in pip_runs:
        argv = [str(python), *(str(copies.get(a, a)) for a in run[1:] if a != "--no-cache-dir")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=clean)
        assert r.returncode == 0, f"{shlex.join(argv)}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    r = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120, env=clean)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(python), "-c", "import repoforge"], capture_output=True, text=True, timeout=60, env=clean)
    assert r.returncode != 0  # the image gets what the build declares, not repoforge
