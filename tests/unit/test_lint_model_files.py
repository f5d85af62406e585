"""lint and import against what is really in the folder (issue 23): an ONNX file that contradicts its config, the
dtype names import prints, and a TorchServe build handed to Triton's tools."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from repoforge.cli import main
from repoforge.lint import lint_repository
from repoforge.triton.reverse import config_differences


def _onnx(path: Path, width: int = 8) -> None:
    """input [-1, width] FP32 -> probabilities [-1, 3] FP32 (the classifier's signature)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [width, 3], [0.1] * (width * 3))
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["probabilities"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


CONTRADICTS = """name: "clf"
{backend}
max_batch_size: 8
input [ {{ name: "inp" data_type: TYPE_FP32 dims: [ 9 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_INT64 dims: [ 3 ] }} ]
"""


@pytest.mark.parametrize(
    "backend",
    ['platform: "onnxruntime_onnx"', 'backend: "onnxruntime"'],
    ids=["platform", "backend"],
)
def test_lint_reports_every_disagreement_with_the_onnx_file(tmp_path: Path, backend: str) -> None:
    repo = tmp_path / "repo"
    _onnx(repo / "clf" / "1" / "model.onnx")
    (repo / "clf" / "config.pbtxt").write_text(CONTRADICTS.format(backend=backend))
    report = lint_repository(repo)
    text = report.format()
    assert not report.ok and report.exit_code == 1, text
    errors = [f.message for f in report.errors]
    assert any("'inp'" in m and "model.onnx" in m and "'input'" in m for m in errors), text  # the name
    assert any("TYPE_INT64" in m and "TYPE_FP32" in m and "'probabilities'" in m for m in errors), text  # dtype
    # a right name with wrong dims: [9] against the model's [-1, 8]
    (repo / "clf" / "config.pbtxt").write_text(
        CONTRADICTS.format(backend=backend).replace('"inp"', '"input"').replace("TYPE_INT64", "TYPE_FP32")
    )
    report = lint_repository(repo)
    assert [m for m in (f.message for f in report.errors) if "[9]" in m and "[-1, 8]" in m], report.format()
    # what agrees is clean
    (repo / "clf" / "config.pbtxt").write_text(
        CONTRADICTS.format(backend=backend)
        .replace('"inp"', '"input"')
        .replace("TYPE_INT64", "TYPE_FP32")
        .replace("[ 9 ]", "[ 8 ]")
    )
    assert lint_repository(repo).ok, lint_repository(repo).format()


def test_import_names_dtypes_instead_of_enum_numbers() -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    a = mc.ModelConfig(output=[mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[3])])
    b = mc.ModelConfig(output=[mc.ModelOutput(name="y", data_type=mc.TYPE_INT64, dims=[3])])
    assert config_differences(a, b) == ["output[0].data_type: TYPE_FP32 → TYPE_INT64"]


def test_ensemble_without_a_version_folder_says_what_the_server_says(tmp_path: Path) -> None:
    """Triton 2.51 refuses it ('at least one version must be available'; proven against the real server by
    tests/integration/test_lint.py's corpus case invalid/ensemble_no_version_folder): an error, saying so."""
    case = Path(__file__).resolve().parents[1] / "lint_corpus" / "invalid" / "ensemble_no_version_folder"
    report = lint_repository(case)
    assert any("at least one version must be available" in f.message and "1/" in f.message for f in report.errors)


def _torchserve_build(root: Path) -> Path:
    (root / "model-store").mkdir(parents=True)
    (root / "model-store" / "tinynet.mar").write_bytes(b"PK")
    (root / "config.properties").write_text("inference_address=http://127.0.0.1:8080\n")
    return root


def test_lint_and_import_on_a_torchserve_build_say_what_it_is(tmp_path: Path) -> None:
    ts = _torchserve_build(tmp_path / "ts")
    res = CliRunner().invoke(main, ["lint", str(ts)])
    assert res.exit_code != 0
    assert "TorchServe build" in res.output and "repoforge validate" in res.output, res.output
    assert "no config.pbtxt" not in res.output, res.output
    res = CliRunner().invoke(main, ["import", str(ts), "-o", str(tmp_path / "spec.yaml")])
    assert res.exit_code != 0 and not (tmp_path / "spec.yaml").exists()
    assert "TorchServe build" in res.output and "--target triton" in res.output, res.output
    assert "no config.pbtxt" not in res.output, res.output
