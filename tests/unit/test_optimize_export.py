"""Export of TorchScript and eager PyTorch models to ONNX (dynamic batch axis), checked against torch, then built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from repoforge.build import build
from repoforge.optimize import run_optimize
from repoforge.optimize.cache import Cache
from repoforge.spec import load_spec

torch = pytest.importorskip("torch")

NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 32)
        self.fc2 = torch.nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))
"""


def _project(root: Path, fmt: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "net.py").write_text(NET)
    ns: dict[str, object] = {}
    exec(NET, ns)  # the same class the spec's model_file names
    torch.manual_seed(0)
    net = ns["Net"]().eval()  # type: ignore[operator]
    if fmt == "torchscript":
        torch.jit.trace(net, torch.zeros(2, 8)).save(str(root / "net.pt"))
        extra = ""
    else:
        torch.save(net.state_dict(), root / "net.pt")
        extra = "    model_file: net.py\n"
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.savez(root / "val.npz", INPUT__0=x)
    np.savez(root / "calib.npz", INPUT__0=x[:32])
    spec = root / "spec.yaml"
    spec.write_text(
        f"version: 1\nmodels:\n  - name: net\n    format: {fmt}\n    path: net.pt\n{extra}    max_batch_size: 8\n"
        "    inputs: [{name: INPUT__0, dtype: FP32, dims: [8]}]\n"
        "    outputs: [{name: OUTPUT__0, dtype: FP32, dims: [3]}]\n"
        "    optimize:\n      variants: [fp32, int8_static]\n      calibration: calib.npz\n"
        "      validation: {data: val.npz, max_top1_drop: 0.1}\n      rounds: 2\n      opset: 17\n"
    )
    return spec


@pytest.mark.parametrize("fmt", ["torchscript", "pytorch"])
def test_torch_model_is_exported_with_a_dynamic_batch_axis_and_matches_torch(fmt: str, tmp_path: Path) -> None:
    spec = _project(tmp_path / "p", fmt)
    run = run_optimize(load_spec(spec), cache=Cache(enabled=False))
    r = run.results["net"]
    assert r.export is not None and r.export["from"] == fmt and r.export["opset"] == 17
    assert r.export["max_abs_err"] <= 1e-5 + 1e-4 and (r.export["rtol"], r.export["atol"]) == (1e-4, 1e-5)
    fp32 = r.variant("fp32").path
    assert fp32 is not None
    model = onnx.load(str(fp32))
    assert [i.name for i in model.graph.input] == ["INPUT__0"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is symbolic
    assert model.opset_import[0].version == 17
    assert r.variant("int8_static").gate is not None


def test_a_torchscript_spec_with_optimize_builds_an_onnx_model(tmp_path: Path) -> None:
    spec = _project(tmp_path / "p", "torchscript")
    res = build(spec, tmp_path / "repo", device="cpu")
    assert (tmp_path / "repo" / "net" / "1" / "model.onnx").is_file()
    lock = json.loads((tmp_path / "repo" / "repoforge.lock.json").read_text())
    assert lock["optimize"]["net"]["selected"] in ("fp32", "int8_static")
    assert res.plan.model("net").format == "onnx"


def test_an_eager_model_without_its_class_file_is_a_located_error(tmp_path: Path) -> None:
    from repoforge.errors import SpecError

    spec = _project(tmp_path / "p", "pytorch")
    spec.write_text(spec.read_text().replace("    model_file: net.py\n", ""))
    with pytest.raises(SpecError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    assert "spec.yaml:3:" in str(err.value) and "needs `model_file:`" in str(err.value)


def test_a_state_dict_that_does_not_fit_its_class_fails_the_export_in_one_line(tmp_path: Path) -> None:
    from repoforge.optimize.export import ExportError

    spec = _project(tmp_path / "p", "pytorch")
    torch.save({"fc1.weight": torch.zeros(2, 2)}, spec.parent / "net.pt")
    with pytest.raises(ExportError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    assert "does not match class Net" in str(err.value) and "\n" not in str(err.value)
