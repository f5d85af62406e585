"""The gateway builds Triton's ModelInferRequest itself (upstream._message, cheaper than tritonclient's InferInput
objects): it must be the very message tritonclient's `infer` would have sent."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc._utils import _get_inference_request

from repoforge.gateway import upstream
from repoforge.gateway.codec import Request


def _tritonclient_message(request: Request) -> bytes:
    inputs = []
    for name, array in request.inputs.items():
        item = InferInput(name, list(array.shape), request.datatypes[name])
        item.set_data_from_numpy(array)
        inputs.append(item)
    outputs = [InferRequestedOutput(n) for n in request.outputs] if request.outputs else None
    message = _get_inference_request(model_name=request.model, inputs=inputs, model_version="", request_id=request.id,
                                     outputs=outputs, sequence_id=0, sequence_start=False, sequence_end=False,
                                     priority=request.priority, timeout=None, parameters=request.parameters or None)  # fmt: skip
    return bytes(message.SerializeToString(deterministic=True))


CASES = [
    Request("double", {"X": np.array([[1, 2, 3, 4]], dtype=np.float32)}, {"X": "FP32"}),
    Request(
        "m",
        {"A": np.arange(6, dtype=np.int64).reshape(2, 3), "B": np.array([True, False])},
        {"A": "INT64", "B": "BOOL"},
        outputs=["Y", "Z"],
        id="r-1",
        priority=2,
        parameters={"s": "x", "b": True, "i": 3, "f": 0.5},
    ),
    Request(
        "streamer",
        {"TAG": np.array([b"a", b"bc"], dtype=np.object_), "COUNT": np.array([3], dtype=np.int32)},
        {"TAG": "BYTES", "COUNT": "INT32"},
    ),
    Request(
        "e",
        {"X": np.zeros((0, 4), dtype=np.float16), "T": np.zeros((0,), dtype=np.object_)},
        {"X": "FP16", "T": "BYTES"},
    ),
]


@pytest.mark.parametrize("request_", CASES, ids=["fp32", "many-and-parameters", "bytes", "empty"])
def test_the_message_is_the_one_tritonclient_builds(request_: Request) -> None:
    ours = bytes(upstream._message(request_).SerializeToString(deterministic=True))
    assert ours == _tritonclient_message(request_)


def test_a_reserved_parameter_is_refused_as_tritonclient_refuses_it() -> None:
    request = Request("double", {"X": np.ones((1, 1), dtype=np.float32)}, {"X": "FP32"}, parameters={"priority": 1})
    with pytest.raises(upstream.UpstreamError, match='"priority" is a reserved parameter'):
        upstream._message(request)
