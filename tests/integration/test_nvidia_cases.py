"""What NVIDIA's own model repositories and example clients found in build, import and lint (issue 12).

Each case is made here in miniature: a sequence ONNX model whose control inputs Triton fills (NVIDIA's
sequence clients send only the data input), an image model whose input has a `format` and a `reshape`,
a python model with a `default_model_filename` of its own, and python models that rely on their
`auto_complete_config`. The unit tests check the spec, the plan and the importer; the integration test
serves what repoforge builds in one real tritonserver and sends the requests NVIDIA's clients send.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from repoforge.build import build
from repoforge.plan import make_plan
from repoforge.spec import load_spec


def sequence_onnx(path: Path) -> Path:
    """Y = X + 10 * START + 100 * READY: the answer says which controls Triton filled in."""
    t = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("X", "START", "READY", "Y")]
    nodes = [
        helper.make_node("Constant", [], ["ten"], value=helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])),
        helper.make_node(
            "Constant", [], ["hundred"], value=helper.make_tensor("hundred", TensorProto.FLOAT, [], [100.0])
        ),
        helper.make_node("Mul", ["START", "ten"], ["s"]),
        helper.make_node("Mul", ["READY", "hundred"], ["r"]),
        helper.make_node("Add", ["X", "s"], ["xs"]),
        helper.make_node("Add", ["xs", "r"], ["Y"]),
    ]
    graph = helper.make_graph(nodes, "seq", t[:3], [t[3]])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def dyna_sequence_onnx(path: Path) -> Path:
    """NVIDIA's simple_dyna_sequence in miniature: Y = X + 10 * START + 100 * READY + 1000 * END + CORRID, so an
    answer shows every control Triton filled, the correlation id (UINT64) included."""
    f = [helper.make_tensor_value_info(n, TensorProto.INT32, [None, 1]) for n in ("START", "END", "READY")]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1]), *f,
           helper.make_tensor_value_info("CORRID", TensorProto.UINT64, [None, 1])]  # fmt: skip
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])
    nodes = [
        helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in ("START", "END", "READY", "CORRID")
    ]
    for name, k in (("START", 10.0), ("READY", 100.0), ("END", 1000.0)):
        nodes += [
            helper.make_node("Constant", [], [f"{name}_k"], value=helper.make_tensor(f"{name}_k", TensorProto.FLOAT, [], [k])),
            helper.make_node("Mul", [f"{name}_f", f"{name}_k"], [f"{name}_v"]),
        ]  # fmt: skip
    nodes += [
        helper.make_node("Sum", ["X", "START_v", "READY_v", "END_v", "CORRID_f"], ["Y"]),
    ]
    graph = helper.make_graph(nodes, "dyna", ins, [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


ACCUMULATE = Path(__file__).resolve().parents[1] / "data" / "kinds" / "accumulate.py"

SEQUENCE_SPEC = f"""
version: 1
models:
  - name: seq_onnx
    format: onnx
    path: seq.onnx
    max_batch_size: 4
    sequence_batching:
      control_inputs:
        - {{name: START, kind: start, dtype: FP32}}
        - {{name: READY, kind: ready, dtype: FP32}}
  - name: dyna_onnx
    format: onnx
    path: dyna.onnx
    max_batch_size: 4
    sequence_batching:
      strategy: oldest
      max_candidate_sequences: 4
      control_inputs:
        - {{name: START, kind: start, dtype: INT32}}
        - {{name: END, kind: end, dtype: INT32}}
        - {{name: READY, kind: ready, dtype: INT32}}
        - {{name: CORRID, kind: correlation_id, dtype: UINT64}}
  - name: accumulate
    format: python
    path: {ACCUMULATE.as_posix()}
    max_batch_size: 4
    sequence_batching:
      control_inputs:
        - {{name: START, kind: start, dtype: INT32}}
        - {{name: CORRID, kind: correlation_id, dtype: UINT64}}
    inputs: [{{name: X, dtype: FP32, dims: [1]}}]
    outputs: [{{name: TOTAL, dtype: FP32, dims: [1]}}]
"""


CORPUS = Path(__file__).parents[1] / "lint_corpus"
AUTO_COMPLETE = CORPUS / "valid" / "python_auto_complete_no_config"  # NVIDIA's auto_complete example in miniature


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def sequence_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seq")
    sequence_onnx(root / "seq.onnx")
    dyna_sequence_onnx(root / "dyna.onnx")
    write(root, {"spec.yaml": SEQUENCE_SPEC})
    return root


# --- 17: sequence control inputs belong to sequence_batching only ---------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_control_inputs_of_an_onnx_sequence_model_are_not_client_inputs(sequence_project: Path, device: str) -> None:
    plan = make_plan(load_spec(sequence_project / "spec.yaml"), device)  # type: ignore[arg-type]
    assert [t.name for t in plan.model("seq_onnx").inputs] == ["X"]
    assert [t.name for t in plan.model("seq_onnx").outputs] == ["Y"]


# --- 18: an image input's format and reshape survive import -------------------------------------------------


def image_onnx(path: Path) -> Path:
    """NVIDIA's densenet_onnx in miniature: [1, 3, 4, 4] image in, [1, 5, 1, 1] scores out (no batch axis)."""
    x = helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [1, 5, 1, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [5, 3, 1, 1], [0.1 * k for k in range(15)])
    nodes = [
        helper.make_node("GlobalAveragePool", ["data_0"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w"], ["fc6_1"]),
    ]
    graph = helper.make_graph(nodes, "img", [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


IMAGE_CONFIG = """
name: "image"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "data_0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 4, 4 ] reshape { shape: [ 1, 3, 4, 4 ] } } ]
output [ { name: "fc6_1" data_type: TYPE_FP32 dims: [ 5 ] reshape { shape: [ 1, 5, 1, 1 ] } } ]
"""


@pytest.fixture(scope="module")
def image_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("nvidia") / "model_repository"
    write(repo, {"image/config.pbtxt": IMAGE_CONFIG})
    (repo / "image" / "1").mkdir()
    image_onnx(repo / "image" / "1" / "model.onnx")
    return repo


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_import_carries_an_inputs_format_and_reshape(image_repo: Path, tmp_path: Path, device: str) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    from repoforge.importer import import_repository
    from repoforge.triton.config import parse_config

    result = import_repository(image_repo, tmp_path / "spec.yaml", device=device)  # type: ignore[arg-type]
    assert result.differences == {} and result.client_visible == {} and not result.kept_raw
    (model,) = load_spec(result.spec_path).spec.models
    assert model.inputs and (model.inputs[0].format, model.inputs[0].reshape) == ("nchw", [1, 3, 4, 4])
    assert model.outputs and model.outputs[0].reshape == [1, 5, 1, 1]
    cfg = parse_config(
        (build(result.spec_path, tmp_path / "rebuilt", device=device).output / "image" / "config.pbtxt").read_text()
    )  # type: ignore[arg-type]
    assert cfg.input[0].format == mc.ModelInput.FORMAT_NCHW and list(cfg.input[0].reshape.shape) == [1, 3, 4, 4]
    assert list(cfg.input[0].dims) == [3, 4, 4] and list(cfg.output[0].reshape.shape) == [1, 5, 1, 1]


def test_import_exits_1_naming_model_and_field_when_clients_would_see_a_difference(tmp_path: Path) -> None:
    """A difference a client sees (here: an ensemble's dims, derived from its steps) is an error of the command."""
    from click.testing import CliRunner

    from repoforge.cli import main

    case = CORPUS / "valid" / "ensemble_non_batching_over_batching"
    res = CliRunner().invoke(main, ["import", str(case), "-o", str(tmp_path / "spec.yaml")])
    assert res.exit_code == 1, res.output
    assert "changes what clients see" in res.output and "pipe: input[0].dims: [-1, 4] → [4]" in res.output
    assert (tmp_path / "spec.yaml").exists()  # written, to be fixed by hand


def test_a_format_needs_three_dims_and_an_input(tmp_path: Path) -> None:
    from repoforge.errors import SpecError

    sequence_onnx(tmp_path / "seq.onnx")
    write(
        tmp_path,
        {
            "spec.yaml": """
        version: 1
        models:
          - name: m
            format: python
            path: m.py
            inputs: [{name: X, dtype: FP32, dims: [4], format: FORMAT_NCHW}]
            outputs: [{name: Y, dtype: FP32, dims: [3, 4, 4], format: nhwc}]
        """,
            "m.py": "",
        },
    )
    with pytest.raises(SpecError) as info:
        make_plan(load_spec(tmp_path / "spec.yaml"), "cpu")
    assert [p.field for p in info.value.problems] == ["models[0].inputs[0].format", "models[0].outputs[0].format"]
    assert "needs exactly 3 dims" in str(info.value) and "remove it from the output" in str(info.value)


# --- the real server -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(sequence_project: Path, image_repo: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One tritonserver for this module's CPU builds (the sequence spec, the imported image repository), stopped
    even on failure."""
    from repoforge.importer import import_repository
    from repoforge.servers.triton import TritonNotFoundError, TritonServer, find_tritonserver

    try:
        find_tritonserver()
    except TritonNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("built")
    # imported as the GPU repository it is (native onnxruntime), served here by repoforge's CPU runner
    imported = import_repository(image_repo, out / "image" / "spec.yaml", device="gpu").spec_path
    # no config.pbtxt: import reads what Triton auto-completes from a (short-lived) bundled tritonserver
    auto = import_repository(AUTO_COMPLETE, out / "auto" / "spec.yaml", server="bundled")
    assert auto.models == ["m"] and not auto.skipped and auto.differences == {}
    repos = [
        build(spec, out / name / "repo", device="cpu").output
        for name, spec in (("seq", sequence_project / "spec.yaml"), ("image", imported), ("auto", auto.spec_path))
    ]
    with TritonServer(repos) as server:
        yield server


@pytest.mark.integration
def test_nvidia_style_sequence_client_sends_only_the_data_input(served) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as http

    client = http.InferenceServerClient(served.http_url, network_timeout=30.0, connection_timeout=10.0)
    try:
        answers = []
        for i, x in enumerate([1.0, 2.0]):
            t = http.InferInput("X", [1, 1], "FP32")
            t.set_data_from_numpy(np.array([[x]], dtype=np.float32))
            res = client.infer("seq_onnx", [t], sequence_id=7, sequence_start=i == 0, sequence_end=i == 1)
            answers.append(res.as_numpy("Y").item())
    finally:
        client.close()
    assert answers == [111.0, 102.0]  # START on the first request only, READY on both


@pytest.mark.integration
def test_validate_drives_a_real_sequence_and_feeds_the_controls_to_the_reference(served) -> None:  # type: ignore[no-untyped-def]
    """issue 23.7: a correlation id, START, a step, END; onnxruntime gets START/END/READY/CORRID as Triton fills
    them (a reference run without them raised `Required inputs (['START', 'READY']) are missing`)."""
    from repoforge.validate import validate

    repo = Path(served.options.repositories[0])
    report = validate(repo, url=served.http_url, grpc_url=served.grpc_url)
    rows = {c.name: c for c in report.checks}
    assert report.ok, report.to_dict()
    for name in ("seq_onnx", "dyna_onnx", "accumulate"):
        assert "sequence of 3 requests" in rows[name].message, rows[name].message
    for name in ("seq_onnx", "dyna_onnx"):
        assert rows[name].reference and rows[name].reference.startswith("onnxruntime"), rows[name]
        assert "matches onnxruntime" in rows[name].message


@pytest.mark.integration
def test_nvidia_style_image_client_sends_the_configured_dims(served) -> None:  # type: ignore[no-untyped-def]
    """The client sends dims [3, 4, 4] (FORMAT_NCHW, no batch axis); the model sees the reshape [1, 3, 4, 4]."""
    import tritonclient.http as http

    client = http.InferenceServerClient(served.http_url, network_timeout=30.0, connection_timeout=10.0)
    try:
        meta = client.get_model_config("image")
        assert meta["input"][0]["format"] == "FORMAT_NCHW" and [
            int(d) for d in meta["input"][0]["reshape"]["shape"]
        ] == [1, 3, 4, 4]
        image = np.ones((3, 4, 4), dtype=np.float32)
        t = http.InferInput("data_0", [3, 4, 4], "FP32")
        t.set_data_from_numpy(image)
        scores = client.infer("image", [t]).as_numpy("fc6_1")
    finally:
        client.close()
    want = np.array([0.1 * (3 * k + 0) + 0.1 * (3 * k + 1) + 0.1 * (3 * k + 2) for k in range(5)], dtype=np.float32)
    assert scores.size == 5 and np.allclose(scores.ravel(), want, atol=1e-5)


@pytest.mark.integration
def test_a_model_imported_from_its_auto_completed_config_serves(served) -> None:  # type: ignore[no-untyped-def]
    """The built repository pins what auto_complete_config said in config.pbtxt; Triton loads it and it answers."""
    import tritonclient.http as http

    client = http.InferenceServerClient(served.http_url, network_timeout=30.0, connection_timeout=10.0)
    try:
        cfg = client.get_model_config("m")
        assert [t["name"] for t in cfg["input"]] == ["INPUT0", "INPUT1"] and cfg["max_batch_size"] == 8
        feeds = []
        for name, value in (("INPUT0", 1.0), ("INPUT1", 2.5)):
            t = http.InferInput(name, [1, 4], "FP32")
            t.set_data_from_numpy(np.full((1, 4), value, dtype=np.float32))
            feeds.append(t)
        total = client.infer("m", feeds).as_numpy("OUTPUT0")
    finally:
        client.close()
    assert total.tolist() == [[3.5] * 4]


def test_partly_specified_outputs_of_an_auto_completing_python_model_build(tmp_path: Path) -> None:
    """Lint (and so build, which lints what it writes) leaves a missing data_type or dims to auto_complete_config."""
    from repoforge.importer import import_repository
    from repoforge.lint import lint_repository

    case = CORPUS / "valid" / "python_auto_complete_partial_output"
    report = lint_repository(case)
    assert report.ok and {w.field for w in report.warnings} == {"output[0].data_type", "output[1].dims"}
    result = import_repository(case, tmp_path / "spec.yaml")
    rebuilt = build(result.spec_path, tmp_path / "rebuilt", device=result.device).output
    assert (rebuilt / "m" / "config.pbtxt").read_text().count('name: "OUT"') == 1
