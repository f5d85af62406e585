"""`requirements:` on a model that runs the user's own code (a Python model, a TorchServe handler of theirs): what
that code imports beyond the stock server image, which repoforge cannot guess. It reaches everything that delivers
packages: repoforge.lock.json's python_requirements, `repoforge image`'s requirements.txt, `build --pack-env`'s
archive and the .mar's requirements.txt (with install_py_dep_per_model on). repoforge's own code declares its own
packages, so `requirements:` elsewhere is a located error."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.deploy.image import write_image
from repoforge.errors import SpecError
from repoforge.output import MANIFEST

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "tests" / "data" / "plugins" / "scale.py"
CLASSIFIER = ROOT / "examples" / "tabular" / "models" / "classifier.onnx"
MODEL = """\
  - name: mine
    format: python
    path: scale.py
    max_batch_size: 8
    requirements: ["click>=8"]
    inputs: [{name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
"""


def _spec(root: Path, models: str) -> Path:
    shutil.copy(SCALE, root / "scale.py")
    (root / "spec.yaml").write_text("version: 1\nrepository: mine\nmodels:\n" + models)
    return root / "spec.yaml"


def _lock(out: Path) -> dict[str, object]:
    data = json.loads((out / MANIFEST).read_text())
    assert isinstance(data, dict)
    return data


def test_a_python_models_requirements_reach_the_lock_the_image_and_its_packed_env(tmp_path: Path) -> None:
    spec = _spec(tmp_path, MODEL)
    out = build(spec, tmp_path / "repo", device="cpu").output
    assert _lock(out)["python_requirements"] == {"mine": ["click>=8"]}
    ctx = write_image(out, tmp_path / "img").output
    assert ctx is not None and "click>=8" in (ctx / "requirements.txt").read_text().splitlines()
    packed = build(spec, tmp_path / "packed", device="cpu", pack_env=True).output
    with tarfile.open(packed / "mine" / "python_env.tar.gz") as tar:
        assert any("/site-packages/click/" in n for n in tar.getnames())
    envs = _lock(packed)["execution_envs"]
    assert isinstance(envs, dict) and any(p.startswith("click==") for p in envs["mine"]["packages"])


def test_a_torchserve_handler_of_the_users_carries_its_requirements_in_the_mar(tmp_path: Path) -> None:
    (tmp_path / "own.py").write_text("from repoforge_runtime.torchserve.handler import RepoforgeHandler\n")
    spec = _spec(
        tmp_path,
        f"  - name: clf\n    format: onnx\n    path: {CLASSIFIER.as_posix()}\n    handler: own.py\n"
        '    requirements: ["scikit-learn>=1.4", "onnxruntime>=1.17"]\n',
    )
    out = build(spec, tmp_path / "ts", target="torchserve", device="cpu").output
    assert _lock(out)["python_requirements"] == {"clf": ["onnxruntime>=1.17", "scikit-learn>=1.4"]}
    with zipfile.ZipFile(out / "model-store" / "clf.mar") as mar:
        assert mar.read("requirements.txt").decode().split() == ["onnxruntime>=1.17", "scikit-learn>=1.4"]
    assert "install_py_dep_per_model=true" in (out / "config.properties").read_text()


@pytest.mark.parametrize(
    ("models", "target", "expect"),
    [
        (
            f"  - {{name: clf, format: onnx, path: {CLASSIFIER.as_posix()}, requirements: [scikit-learn]}}\n",
            "triton",
            "models[0].requirements: `requirements:` lists what your own code imports (a format python model)",
        ),
        (
            "  - {name: cache, format: python, plugin: {kind: result_cache, model: mine}, requirements: [redis]}\n"
            + MODEL,
            "triton",
            "model 'cache' runs repoforge's code",
        ),
        (
            f"  - {{name: clf, format: onnx, path: {CLASSIFIER.as_posix()}, requirements: [scikit-learn]}}\n",
            "torchserve",
            "(a format python model, or a handler or model_file of yours)",
        ),
        (MODEL.replace('["click>=8"]', '["click>>8"]'), "triton", "'click>>8' is not a pip requirement"),
    ],
)
def test_requirements_where_repoforges_code_runs_or_malformed_are_located(
    tmp_path: Path, models: str, target: str, expect: str
) -> None:
    with pytest.raises(SpecError) as info:
        build(_spec(tmp_path, models), tmp_path / "out", target=target, device="cpu")
    assert "spec.yaml:" in str(info.value) and expect in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()
