"""`repoforge validate` on what NVIDIA's own repositories contain: auto-completed configs, models that refuse
random data or leave outputs out, reshaped ONNX outputs, and models that never answer in time. One extra
small tritonserver serves the hand-written repositories of tests/data/validate (their sleeping models must
not slow the session server's tests down)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as http
from click.testing import CliRunner
from onnx import TensorProto, helper

from repoforge.build import build
from repoforge.cli import main
from repoforge.errors import SpecError
from repoforge.modelgen import mlp, save
from repoforge.servers.triton import TritonServer
from repoforge.spec.models import SMOKE_INPUTS
from repoforge.targets.triton.validate import _models_own_error
from repoforge.validate import ModelCheck, ValidationReport, judge_answer, validate

DATA = Path(__file__).resolve().parents[1] / "data" / "validate"
PICKY = DATA / "answers" / "picky" / "1" / "model.py"


def _gelu() -> onnx.ModelProto:
    """A com.microsoft contrib op: onnxruntime runs it, onnx.reference does not."""
    graph = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8
    )


def _scaled() -> onnx.ModelProto:
    """(1,10,1,1) -> (1,10,1,1): what an image classifier's head gives before a config `reshape`."""
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [3.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "scaled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10, 1, 1])],
        [scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _spec_project(root: Path) -> Path:
    """ONNX models (one onnx.reference can run, one it cannot) and a picky python model given smoke inputs."""
    save(mlp([4, 8, 3], softmax=True), root / "dense.onnx")
    onnx.save(_gelu(), str(root / "gelu.onnx"))
    np.savez(root / "positive.npz", IN=np.array([1.0, 4.0], dtype=np.float32))
    (root / "spec.yaml").write_text(
        "version: 1\nmodels:\n"
        "  - {name: dense, format: onnx, path: dense.onnx}\n"
        "  - {name: gelu, format: onnx, path: gelu.onnx}\n"
        f"  - name: picky_smoke\n    format: python\n    path: {PICKY}\n    max_batch_size: 0\n"
        "    inputs: [{name: IN, dtype: FP32, dims: [2]}]\n    outputs: [{name: OUT, dtype: FP32, dims: [2]}]\n"
        "    smoke: {inputs: positive.npz}\n"
    )
    return root / "spec.yaml"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("validate")
    out = {name: Path(shutil.copytree(DATA / name, root / name)) for name in ("autocomplete", "answers", "slow")}
    onnx.save(_scaled(), str(out["answers"] / "squeezed" / "1" / "model.onnx"))
    out["built"] = build(_spec_project(tmp_path_factory.mktemp("project")), root / "built", device="cpu").output
    return out


@pytest.fixture(scope="module")
def server(repos: dict[str, Path]) -> Iterator[TritonServer]:
    # the slow models' tests walk away from requests that answer only after 10 s: at shutdown Triton would wait for
    # them (up to --exit-timeout-secs, 30 s by default), which this module's teardown paid every run
    with TritonServer(list(repos.values()), extra_args=("--exit-timeout-secs", "3")) as s:
        yield s


def _rows(report: ValidationReport) -> dict[str, ModelCheck]:
    return {c.name: c for c in report.checks}


@pytest.mark.integration
def test_auto_completed_models_get_a_request_made_from_the_served_config(
    server: TritonServer, repos: dict[str, Path]
) -> None:
    """The disk's config.pbtxt says only `backend: "python"` (or is missing); Triton serves what
    auto_complete_config filled in: a batched [-1,4] input, a decoupled policy that needs gRPC streaming."""
    report = validate(repos["autocomplete"], url=server.http_url, grpc_url=server.grpc_url)
    rows = _rows(report)
    assert set(rows) == {"ac_batch", "ac_bare", "ac_stream"}
    assert report.ok, report.to_dict()
    assert "OUT[1, 4]" in rows["ac_batch"].message and "OUT[1, 4]" in rows["ac_bare"].message


@pytest.mark.integration
def test_a_model_that_refuses_the_smoke_request_is_reported_as_its_own_answer(
    server: TritonServer, repos: dict[str, Path]
) -> None:
    rows = _rows(validate(repos["answers"], url=server.http_url, grpc_url=server.grpc_url))
    for name, says in (("picky", "IN must be non-negative"), ("bls_absent", "not_loaded")):
        assert not rows[name].ok
        assert rows[name].message.startswith("the model answered with an error"), rows[name].message
        assert says in rows[name].message and "smoke: {inputs: file.npz}" in rows[name].message


@pytest.mark.integration
def test_triton_refusing_a_request_is_not_the_models_answer(server: TritonServer) -> None:
    """A request Triton itself refuses (wrong shape: a wiring fault) is told apart from a model's own error."""
    client = http.InferenceServerClient(server.http_url, network_timeout=30, connection_timeout=30)
    try:
        for shape, own in (([3], False), ([2], True)):
            t = http.InferInput("IN", shape, "FP32")
            t.set_data_from_numpy(-np.ones(shape, dtype=np.float32))
            with pytest.raises(Exception) as err:
                client.infer("picky", [t])
            assert _models_own_error(err.value) is own, str(err.value)
    finally:
        client.close()


@pytest.mark.integration
def test_smoke_inputs_from_the_spec_are_built_in_and_sent(server: TritonServer, repos: dict[str, Path]) -> None:
    assert (repos["built"] / "picky_smoke" / SMOKE_INPUTS).is_file()
    row = _rows(validate(repos["built"], url=server.http_url, grpc_url=server.grpc_url))["picky_smoke"]
    assert row.ok and SMOKE_INPUTS in row.message, row


def test_smoke_inputs_that_are_missing_or_name_no_input_fail_the_build(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    base = (
        "version: 1\nmodels:\n  - name: picky\n    format: python\n    path: " + str(PICKY) + "\n"
        "    inputs: [{name: IN, dtype: FP32, dims: [2]}]\n    outputs: [{name: OUT, dtype: FP32, dims: [2]}]\n"
    )
    spec.write_text(base + "    smoke: {inputs: nothere.npz}\n")
    with pytest.raises(
        SpecError, match=r"spec.yaml:\d+:\d+ models\[0\]\.smoke\.inputs: smoke inputs file 'nothere.npz' not found"
    ):
        build(spec, tmp_path / "out")
    np.savez(tmp_path / "wrong.npz", INPUT=np.zeros(2, dtype=np.float32))
    spec.write_text(base + "    smoke: {inputs: wrong.npz}\n")
    with pytest.raises(SpecError, match="INPUT in 'wrong.npz' are not inputs of this model; inputs are IN"):
        build(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_a_response_without_a_requested_output_is_that_models_row(server: TritonServer, repos: dict[str, Path]) -> None:
    report = validate(repos["answers"], url=server.http_url, grpc_url=server.grpc_url)
    rows = _rows(report)
    assert not rows["drops_output"].ok and rows["drops_output"].message == "output B missing from the response"
    assert set(rows) == {"bls_absent", "drops_output", "picky", "squeezed"}  # the report goes on past it


@pytest.mark.integration
def test_a_reshaped_onnx_answer_is_compared_in_the_references_shape(
    server: TritonServer, repos: dict[str, Path]
) -> None:
    """The model answers (10,) for an ONNX output of (1,10,1,1): the same tensor, not a broadcast difference."""
    row = _rows(validate(repos["answers"], url=server.http_url, grpc_url=server.grpc_url))["squeezed"]
    assert row.ok and row.max_abs_err == 0.0, row


def test_shapes_are_aligned_only_when_they_hold_the_same_tensor() -> None:
    ref = {"y": np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)}
    assert judge_answer("m", "1", {"y": np.arange(6, dtype=np.float32)}, ref, 1.0).ok
    for shape in ((2, 3), (5,)):
        got = {"y": np.zeros(shape, dtype=np.float32)}
        check = judge_answer(
            "m", "1", got, {"y": np.zeros((3, 2) if shape == (2, 3) else (1, 6), dtype=np.float32)}, 1.0
        )
        assert not check.ok and check.message.startswith("shape mismatch: y: answered shape"), check.message


@pytest.mark.integration
def test_onnx_answers_are_also_checked_against_onnx_reference(server: TritonServer, repos: dict[str, Path]) -> None:
    """On CPU Triton runs onnxruntime too; onnx.reference is an independent implementation where it has the ops."""
    rows = _rows(validate(repos["built"], url=server.http_url, grpc_url=server.grpc_url))
    assert rows["dense"].ok and rows["dense"].reference == "onnxruntime+onnx.reference", rows["dense"]
    assert "and onnx.reference (max abs err" in rows["dense"].message
    assert rows["gelu"].ok and rows["gelu"].reference == "onnxruntime", rows["gelu"]
    assert "onnx.reference cannot run it" in rows["gelu"].message and "Gelu" in rows["gelu"].message


def test_an_answer_that_matches_onnxruntime_but_not_onnx_reference_fails() -> None:
    got = {"y": np.array([1.0, 2.0], dtype=np.float32)}
    check = judge_answer("m", "1", got, dict(got), 1.0, independent={"y": np.array([1.0, 2.5], dtype=np.float32)})
    assert not check.ok and "differs from onnx.reference" in check.message
    assert check.reference == "onnxruntime+onnx.reference"


@pytest.mark.integration
def test_models_that_never_answer_fail_their_own_rows_and_the_rest_are_checked(
    server: TritonServer, repos: dict[str, Path]
) -> None:
    """A model that sleeps, a stream that never sends its final flag in time, and one that trickles responses
    past the model's total bound each fail with "no answer in N s"; the model after them still answers."""
    rows = _rows(validate(repos["slow"], url=server.http_url, grpc_url=server.grpc_url, timeout=3))
    for name in ("hang_forever", "hang_no_final", "hang_trickle"):
        assert not rows[name].ok and rows[name].message.startswith("no answer in 3 s"), rows[name]
    assert "sent 1 response(s) but not its final flag" in rows["hang_no_final"].message
    assert rows["quick"].ok, rows["quick"]


def test_cli_validate_of_a_spec_file_says_so_and_names_an_output_folder(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nmodels: []\n")
    res = CliRunner().invoke(main, ["validate", str(spec)])
    assert res.exit_code == 1
    assert f"{spec} is a spec file, not a model repository" in res.output
    assert f"repoforge build {spec} -o <folder>" in res.output and f"-o {spec}" not in res.output


def test_cli_validate_refuses_a_timeout_that_is_not_positive(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["validate", str(tmp_path), "--timeout", "0"])
    assert res.exit_code == 2 and "--timeout" in res.output
