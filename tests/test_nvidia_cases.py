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
    nodes = [helper.make_node("Constant", [], ["ten"], value=helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])),
             helper.make_node("Constant", [], ["hundred"], value=helper.make_tensor("hundred", TensorProto.FLOAT, [], [100.0])),
             helper.make_node("Mul", ["START", "ten"], ["s"]), helper.make_node("Mul", ["READY", "hundred"], ["r"]),
             helper.make_node("Add", ["X", "s"], ["xs"]), helper.make_node("Add", ["xs", "r"], ["Y"])]
    graph = helper.make_graph(nodes, "seq", t[:3], [t[3]])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


SEQUENCE_SPEC = """
version: 1
models:
  - name: seq_onnx
    format: onnx
    path: seq.onnx
    max_batch_size: 4
    sequence_batching:
      control_inputs:
        - {name: START, kind: start, dtype: FP32}
        - {name: READY, kind: ready, dtype: FP32}
"""


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
    write(root, {"spec.yaml": SEQUENCE_SPEC})
    return root


# --- 17: sequence control inputs belong to sequence_batching only ---------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_control_inputs_of_an_onnx_sequence_model_are_not_client_inputs(sequence_project: Path, device: str) -> None:
    plan = make_plan(load_spec(sequence_project / "spec.yaml"), device)  # type: ignore[arg-type]
    assert [t.name for t in plan.model("seq_onnx").inputs] == ["X"]
    assert [t.name for t in plan.model("seq_onnx").outputs] == ["Y"]


# --- the real server -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(sequence_project: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One tritonserver for this module's built repository, stopped even on failure."""
    from repoforge.servers.triton import TritonNotFoundError, TritonServer, find_tritonserver

    try:
        find_tritonserver()
    except TritonNotFoundError as exc:
        pytest.skip(str(exc))
    repo = build(sequence_project / "spec.yaml", tmp_path_factory.mktemp("built") / "repo", device="cpu").output
    with TritonServer(repo) as server:
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
