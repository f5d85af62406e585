"""The gateway's one connection to Triton: `tritonclient.grpc.aio`, unary calls for `/infer` and one
bi-directional gRPC stream per streamed request, so cancelling it (client gone, timeout) cancels the request
inside Triton: the gRPC frontend is where Triton honours cancellation (request_cancellation.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult, service_pb2
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from repoforge.gateway.codec import Request

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"


class UpstreamError(Exception):
    """Triton answered with an error (the message is Triton's)."""


class UpstreamTimeout(UpstreamError):
    """No answer within the timeout; the request was cancelled in Triton."""


class UpstreamUnavailable(UpstreamError):
    """Triton could not be reached: not the request's fault (the queue retries it without counting a delivery)."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says Triton is unreachable (gRPC UNAVAILABLE), from an inference or a metadata call."""
    if isinstance(exc, UpstreamUnavailable):
        return True
    status = getattr(exc, "status", None)
    return callable(status) and "UNAVAILABLE" in str(status())


def _inputs(request: Request) -> list[Any]:
    inputs = []
    for name, array in request.inputs.items():
        item = InferInput(name, list(array.shape), request.datatypes[name])
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _outputs(request: Request) -> list[Any] | None:
    return [InferRequestedOutput(n) for n in request.outputs] if request.outputs else None


def connect(url: str) -> Any:
    """An aio client for Triton's gRPC endpoint (`host:port`); created inside the running event loop."""
    return InferenceServerClient(url)


_RESERVED = ("sequence_id", "sequence_start", "sequence_end", "priority", "binary_data_output")


def _message(request: Request) -> Any:
    """The ModelInferRequest for `request`, built straight from its checked arrays: what tritonclient's `infer`
    builds through one InferInput object per tensor, without them (the gateway's `/infer` is CPU-bound on 2 cores)."""
    message = service_pb2.ModelInferRequest(model_name=request.model, id=request.id)
    for name, array in request.inputs.items():
        datatype = request.datatypes[name]
        message.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(array)
            message.raw_input_contents.append(serialized.item() if serialized.size else b"")
        else:
            message.raw_input_contents.append(array.tobytes())
    for name in request.outputs or ():
        message.outputs.add(name=name)
    if request.priority:
        message.parameters["priority"].uint64_param = request.priority
    for key, value in request.parameters.items():
        if key in _RESERVED:
            raise UpstreamError(f'Parameter "{key}" is a reserved parameter and cannot be specified.')
        if isinstance(value, str):
            message.parameters[key].string_param = value
        elif isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        else:
            message.parameters[key].double_param = value
    return message


async def infer(client: Any, request: Request, timeout: float | None) -> Any:
    """One unary inference; UpstreamTimeout after `timeout` seconds (the call's gRPC deadline: when it passes the
    call is cancelled, and with it the request in Triton), UpstreamError with Triton's message otherwise.

    It calls tritonclient's own stub (`_client_stub`, tritonclient 2.51) with a message built by `_message`: what
    tritonclient's `infer` does around that stub, minus its per-tensor objects. Side by side on the 2-core host
    that was 8-9 % less gateway CPU per `/infer` (bench/RESULTS.md, gateway-profile)."""
    try:
        return InferResult(await client._client_stub.ModelInfer(request=_message(request), timeout=timeout))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise UpstreamTimeout(f"no answer from model '{request.model}' within {timeout:g} s; cancelled") from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise UpstreamUnavailable(f"Triton unreachable: {exc.details() or exc}") from None
        raise UpstreamError(exc.details() or str(exc)) from None


async def stream(client: Any, request: Request, decoupled: bool = True) -> AsyncGenerator[Any, None]:
    """Every response of one request, in order, for decoupled and ordinary models alike; the gRPC stream is
    cancelled when the caller stops iterating (disconnect, error), which cancels the request inside Triton.
    An ordinary model's one response comes from a unary call (cheaper than a stream; cancelled the same way).

    Nothing is buffered here: the next response is read from gRPC only when the caller asks for it, so a slow
    reader holds the stream at gRPC's flow-control window instead of growing memory."""
    if not decoupled:
        yield await infer(client, request, None)
        return
    params = dict(request.parameters)
    params[EMPTY_FINAL] = True

    async def one() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": request.model, "inputs": _inputs(request), "outputs": _outputs(request),
               "request_id": request.id, "parameters": params, "priority": request.priority}  # fmt: skip

    responses = client.stream_infer(one())
    try:
        async for result, error in responses:
            if error is not None:  # Triton ends a request with an error response
                raise UpstreamError(error.message() or str(error))
            response = result.get_response()
            if response.outputs:
                yield result
            if response.parameters[FINAL].bool_param:
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, InferenceServerException):
            raise UpstreamError(exc.message() or str(exc)) from None

        if isinstance(exc, grpc.RpcError):
            raise UpstreamError(f"gRPC stream to Triton failed: {exc}") from None
        raise
    finally:
        responses.cancel()  # a no-op once Triton has sent the final response; otherwise it cancels the request
