"""The gateway's request checks and argument checks, without servers (the served behaviour is in
tests/integration/test_gateway.py)."""

from __future__ import annotations

import numpy as np
import pytest

from repoforge.gateway.catalog import ModelInfo, Tensor
from repoforge.gateway.codec import parse_generate, parse_v2
from repoforge.gateway.command import QueueOptions, check_target
from repoforge.gateway.errors import GatewayArgumentError, RequestError
from repoforge.gateway.queue import QueueSettings, backoff

MODEL = ModelInfo(
    name="m",
    version="1",
    inputs={"X": Tensor("X", "FP32", (-1, 3)), "T": Tensor("T", "BYTES", (-1, 1), optional=True)},
    outputs={"Y": Tensor("Y", "FP32", (-1, 3))},
    max_batch_size=4,
    decoupled=False,
)


def test_v2_request_becomes_arrays_of_the_model_dtype() -> None:
    req = parse_v2(MODEL, {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]})
    assert req.inputs["X"].dtype == np.float32 and req.inputs["X"].shape == (2, 3)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        (
            {"name": "Q", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
            "no input 'Q'; its inputs: X (FP32 [-1, 3])",
        ),
        (
            {"name": "X", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
            "datatype INT64, the model expects FP32",
        ),
        ({"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}, "shape [1, 4] does not match"),
        ({"name": "X", "datatype": "FP32", "shape": [5, 3], "data": [0] * 15}, "over the model's max_batch_size 4"),
        ({"name": "X", "datatype": "FP32", "shape": [1, 3], "data": ["a", "b", "c"]}, "data is not FP32"),
    ],
)
def test_a_wrong_input_is_a_400_naming_it(item: dict[str, object], says: str) -> None:
    with pytest.raises(RequestError, match=r".*") as caught:
        parse_v2(MODEL, {"inputs": [item]})
    assert caught.value.status == 400 and says in str(caught.value)


def test_generate_values_get_the_batch_dimension_and_strings_become_bytes() -> None:
    req = parse_generate(MODEL, {"X": [1, 2, 3], "T": "hello", "parameters": {"k": 1}})
    assert req.inputs["X"].shape == (1, 3) and req.inputs["T"].reshape(-1)[0] == b"hello"
    assert req.parameters == {"k": 1}
    with pytest.raises(RequestError, match="needs input 'X'"):
        parse_generate(MODEL, {"T": "x"})


def test_queue_arguments_are_checked_before_anything_starts() -> None:
    assert QueueOptions().settings("--request-timeout") is None  # no --redis: async off
    with pytest.raises(GatewayArgumentError, match="must be longer than --request-timeout"):
        QueueOptions("redis://h:1/0", request_timeout_s=10, visibility_timeout_s=5).settings("--request-timeout")
    with pytest.raises(GatewayArgumentError, match="expected a URL"):
        QueueOptions("h:1").settings("--request-timeout")
    with pytest.raises(GatewayArgumentError, match="neither a build folder"):
        check_target("no-such-folder")


def test_backoff_grows_and_is_jittered() -> None:
    s = QueueSettings(redis_url="redis://h:1/0", backoff_base_s=1, backoff_max_s=8)
    first = [backoff(s, 1) for _ in range(50)]
    assert all(0.5 <= b <= 1.5 for b in first) and len(set(first)) > 1
    assert all(4 <= backoff(s, 4) <= 12 for _ in range(20))


def test_an_unreachable_triton_is_told_apart_from_a_failing_request() -> None:
    from tritonclient.utils import InferenceServerException

    from repoforge.gateway.upstream import UpstreamError, UpstreamUnavailable, unavailable

    assert unavailable(UpstreamUnavailable("Triton unreachable"))
    assert unavailable(InferenceServerException("connect failed", status="StatusCode.UNAVAILABLE"))
    assert not unavailable(InferenceServerException("poison", status="StatusCode.INTERNAL"))
    assert not unavailable(UpstreamError("poison"))
