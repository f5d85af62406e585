"""Every built repository carries a README.md whose commands work: its curl smoke test is run as written against
the session's real Triton (only the port differs)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from repoforge.build import build
from repoforge.servers.triton import TritonServer

ROOT = Path(__file__).resolve().parents[2]


def _curl_commands(readme: str, base: str) -> list[str]:
    """The README's curl lines (joined across `\\` continuations), aimed at `base` instead of :8000."""
    text = readme.replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("curl ")]
    return [ln.replace("http://127.0.0.1:8000", base) for ln in lines]


def test_triton_readme_smoke_commands_answer(built_examples: dict[str, Path], triton: TritonServer) -> None:
    readme = (built_examples["ensemble"] / "README.md").read_text(encoding="utf-8")
    assert "repoforge serve ." in readme and "repoforge perf . -m" in readme and "--baseline" in readme
    cmds = _curl_commands(readme, f"http://{triton.http_url}")
    infer = [c for c in cmds if "/infer" in c]
    assert {re.search(r"/v2/models/(\w+)/infer", c).group(1) for c in infer} == {"preprocess", "classifier", "pipeline"}
    for cmd in cmds:
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
        if "/infer" in cmd:
            assert '"outputs"' in res.stdout


def test_gpu_readme_gives_the_ngc_line_and_cpu_the_same_without_gpus(tmp_path: Path) -> None:
    """A CPU build of ONNX uses the native onnxruntime backend (issue 21): its README gives the NGC image's line too,
    without `--gpus all`, besides `repoforge serve`."""
    gpu = build(ROOT / "examples" / "tabular" / "spec.yaml", tmp_path / "gpu", device="gpu").output
    text = (gpu / "README.md").read_text(encoding="utf-8")
    assert "docker run --gpus all" in text and "--model-repository=/models" in text
    cpu = build(ROOT / "examples" / "tabular" / "spec.yaml", tmp_path / "cpu", device="cpu").output
    text = (cpu / "README.md").read_text(encoding="utf-8")
    assert "docker run --rm" in text and "--gpus" not in text and "repoforge serve ." in text
