"""JSON requests in, checked tensors out, and responses back to JSON.

Two request shapes are accepted: KServe v2 (`{"inputs": [{"name", "datatype", "shape", "data"}], ...}`) and
Triton's generate extension (`{"<input name>": value, ..., "parameters": {...}}`). Both are checked against the
model's metadata here, so a wrong name, dtype or shape is a 400 naming it and nothing reaches Triton or the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repoforge.gateway.catalog import ModelInfo, Tensor
from repoforge.gateway.errors import RequestError

_NP: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip


@dataclass
class Request:
    """One checked inference request: what the gateway sends to Triton."""

    model: str
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    priority: int = 0  # Triton's request priority (1 highest); 0: the model's default level (the tenant's, if any)


def _describe(t: Tensor) -> str:
    return f"{t.name} ({t.datatype} {list(t.shape)})"


def _array(model: ModelInfo, spec: Tensor, data: Any, datatype: str) -> np.ndarray:
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object)
            return np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(flat)
        return np.asarray(data, dtype=_NP[datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(400, f"input '{spec.name}' of model '{model.name}': data is not {datatype}: {exc}",
                           input=spec.name) from None  # fmt: skip


def _check_shape(model: ModelInfo, spec: Tensor, shape: tuple[int, ...]) -> None:
    ok = len(shape) == len(spec.shape) and all(w in (-1, g) for w, g in zip(spec.shape, shape, strict=True))
    if model.max_batch_size > 0 and ok and shape and shape[0] > model.max_batch_size:
        raise RequestError(400, f"input '{spec.name}' of model '{model.name}': batch {shape[0]} is over the "
                                f"model's max_batch_size {model.max_batch_size}", input=spec.name)  # fmt: skip
    if not ok:
        raise RequestError(400, f"input '{spec.name}' of model '{model.name}': shape {list(shape)} does not match "
                                f"the model's {list(spec.shape)} (-1 = any)", input=spec.name)  # fmt: skip


def _spec(model: ModelInfo, name: Any) -> Tensor:
    spec = model.inputs.get(str(name))
    if spec is None:
        expected = ", ".join(_describe(t) for t in model.inputs.values())
        raise RequestError(400, f"model '{model.name}' has no input '{name}'; its inputs: {expected}", input=name)
    return spec


def _check_complete(model: ModelInfo, given: dict[str, np.ndarray]) -> None:
    missing = [t for n, t in model.inputs.items() if n not in given and not t.optional]
    if missing:
        raise RequestError(400, f"model '{model.name}' needs input '{missing[0].name}' ({missing[0].datatype} "
                                f"{list(missing[0].shape)})", input=missing[0].name)  # fmt: skip


def parse_v2(model: ModelInfo, body: Any) -> Request:
    """A KServe v2 JSON inference request, checked against `model`."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise RequestError(400, 'expected a KServe v2 request: {"inputs": [{"name", "datatype", "shape", "data"}]}')
    arrays: dict[str, np.ndarray] = {}
    for item in body["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape", "data"} <= item.keys():
            raise RequestError(400, "each input needs name, datatype, shape and data")
        spec = _spec(model, item["name"])
        if item["datatype"] != spec.datatype:
            raise RequestError(400, f"input '{spec.name}' of model '{model.name}': datatype {item['datatype']}, "
                                    f"the model expects {spec.datatype}", input=spec.name)  # fmt: skip
        try:
            shape = tuple(int(d) for d in item["shape"])
        except (TypeError, ValueError):
            raise RequestError(400, f"input '{spec.name}': shape must be a list of integers") from None
        _check_shape(model, spec, shape)
        array = _array(model, spec, item["data"], spec.datatype)
        if array.size != math.prod(shape):
            raise RequestError(400, f"input '{spec.name}' of model '{model.name}': {array.size} values for shape "
                                    f"{list(shape)} ({math.prod(shape)} expected)", input=spec.name)  # fmt: skip
        arrays[spec.name] = array.reshape(shape)
    _check_complete(model, arrays)
    outputs = None
    if isinstance(body.get("outputs"), list):
        outputs = [str(o.get("name")) for o in body["outputs"] if isinstance(o, dict)]
        unknown = [o for o in outputs if o not in model.outputs]
        if unknown:
            raise RequestError(400, f"model '{model.name}' has no output '{unknown[0]}'; its outputs: "
                                    f"{', '.join(model.outputs)}")  # fmt: skip
    return Request(model.name, arrays, {n: model.inputs[n].datatype for n in arrays}, outputs,
                   _parameters(body.get("parameters")), str(body.get("id", "")))  # fmt: skip


def _parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        raise RequestError(400, "parameters must be an object of strings, numbers and booleans")
    return dict(value)


def parse_generate(model: ModelInfo, body: Any) -> Request:
    """A generate-extension request (`{"<input>": value, "parameters": {...}}`), checked against `model`.

    A value fills the model's shape: a scalar or a list is given a batch dimension of 1 (and the leading
    dimensions it lacks), as Triton's generate endpoint does."""
    if not isinstance(body, dict):
        raise RequestError(400, 'expected a JSON object: {"<input name>": value, ..., "parameters": {...}}')
    if "inputs" in body and isinstance(body["inputs"], list):
        return parse_v2(model, body)
    arrays: dict[str, np.ndarray] = {}
    for name, value in body.items():
        if name in ("parameters", "id"):
            continue
        spec = _spec(model, name)
        array = _array(model, spec, value, spec.datatype)
        while array.ndim < len(spec.shape):
            array = array[np.newaxis, ...]
        _check_shape(model, spec, tuple(array.shape))
        arrays[spec.name] = array
    _check_complete(model, arrays)
    return Request(model.name, arrays, {n: model.inputs[n].datatype for n in arrays}, None,
                   _parameters(body.get("parameters")), str(body.get("id", "")))  # fmt: skip


def _jsonable(array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if flat.dtype == np.object_ or flat.dtype.kind == "S":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat.tolist()]
    return list(flat.tolist())


def outputs_v2(result: Any) -> list[dict[str, Any]]:
    """A tritonclient InferResult's outputs as KServe v2 JSON rows."""
    rows = []
    for out in result.get_response().outputs:
        array = result.as_numpy(out.name)
        if array is None:
            continue
        rows.append({"name": out.name, "datatype": out.datatype, "shape": list(array.shape), "data": _jsonable(array)})
    return rows


def response_v2(model: ModelInfo, result: Any, request_id: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs_v2(result)}
    if request_id:
        body["id"] = request_id
    return body


def event_generate(model: ModelInfo, result: Any, request_id: str = "") -> dict[str, Any]:
    """One streamed response in the generate extension's shape: each output by name, one value unwrapped."""
    event: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id:
        event["id"] = request_id
    for row in outputs_v2(result):
        event[row["name"]] = row["data"][0] if len(row["data"]) == 1 else row["data"]
    return event
