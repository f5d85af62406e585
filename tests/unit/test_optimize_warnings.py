"""`optimize` keeps onnxconverter-common's float16 UserWarnings off the screen: one summary line per variant,
every warning with `-v` (issue 23, item 16)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxconverter_common")


def _project(root: Path) -> Path:
    """A linear model whose weights fp16 cannot hold (tiny and huge values): the converter warns about each."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    w[0] = [1e-9, 2e-9, 3e-9]  # below fp16's smallest subnormal: truncated, with a warning each
    w[1] = [7e4, 8e4, 9e4]  # above fp16's largest value: clipped, with a warning each
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "m.onnx"))
    np.savez(root / "val.npz", input=rng.normal(size=(64, 8)).astype(np.float32))
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: m\n    format: onnx\n    path: m.onnx\n    max_batch_size: 8\n"
        "    optimize: {variants: [fp32, fp16], validation: {data: val.npz}, rounds: 2}\n"
    )
    return spec


def _optimize(spec: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "repoforge", "optimize", str(spec), "-o", str(out), "--no-cache", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_fp16_warnings_are_one_summary_line_and_all_of_them_with_v(tmp_path: Path) -> None:
    spec = _project(tmp_path)
    proc = _optimize(spec, tmp_path / "out")
    assert proc.returncode in (0, 1), proc.stderr
    text = proc.stdout + proc.stderr
    assert "UserWarning" not in text and "will be truncated" not in text, text
    summary = [line for line in text.splitlines() if "fp16:" in line and "warning" in line]
    assert len(summary) == 1, text
    assert "2 float16 conversion warnings" in summary[0] and "-v" in summary[0], summary
    verbose = _optimize(spec, tmp_path / "out-v", "-v")
    text = verbose.stdout + verbose.stderr
    assert "UserWarning" not in text
    assert sum("will be truncated" in line for line in text.splitlines()) == 2, text
