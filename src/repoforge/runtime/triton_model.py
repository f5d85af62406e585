"""Shared plumbing for repoforge's Triton Python backends: config parsing, batching of requests,
and per-request error responses, so each runner only says how to compute one batch."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch import run_merged, split_rows
from .threads import instance_count, probe_feed

_PB_UTILS: Any = None


def pb_utils() -> Any:
    """`triton_python_backend_utils` exists only inside the stub; import it when first needed
    (and only once: this runs for every request)."""
    global _PB_UTILS
    if _PB_UTILS is None:
        _PB_UTILS = importlib.import_module("triton_python_backend_utils")
    return _PB_UTILS


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # Triton name without TYPE_, e.g. FP32, STRING
    dims: tuple[int, ...] = ()  # without the batch dimension; -1 = variable


@dataclass
class ModelArgs:
    """What Triton passes to `initialize`, parsed once."""

    name: str
    version: str
    repository: str
    max_batch_size: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    parameters: dict[str, str]
    instances: int = 1  # this model's instances on the host (they share its cores)
    sequence_inputs: list[TensorInfo] = field(default_factory=list)  # control and state tensors Triton adds

    @property
    def fed(self) -> list[TensorInfo]:
        """Every tensor a request brings to the model: the config's inputs, then the sequence batcher's."""
        return self.inputs + self.sequence_inputs

    @classmethod
    def parse(cls, args: dict[str, str]) -> ModelArgs:
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        return cls(
            name=args["model_name"],
            version=args["model_version"],
            repository=args["model_repository"],
            max_batch_size=int(cfg.get("max_batch_size", 0)),
            inputs=[_tensor(t) for t in cfg.get("input", [])],
            sequence_inputs=_sequence_inputs(cfg),
            outputs=[_tensor(t) for t in cfg.get("output", [])],
            parameters=params,
            instances=instance_count(cfg),
        )

    def probe_feed(self) -> dict[str, np.ndarray]:
        """A batch of zeros shaped like this model's inputs (for timing it at load)."""
        return probe_feed([(t.name, t.dtype, list(t.dims)) for t in self.fed], self.max_batch_size)


def _tensor(t: dict[str, Any]) -> TensorInfo:
    return TensorInfo(t["name"], t["data_type"].removeprefix("TYPE_"), tuple(int(d) for d in t.get("dims", [])))


def _sequence_inputs(cfg: dict[str, Any]) -> list[TensorInfo]:
    """The tensors Triton's sequence batcher adds to each request (control inputs, implicit state): they are not
    in the config's input list, but the model reads them like inputs (one value per batch item for controls)."""
    sb = cfg.get("sequence_batching") or {}
    out = []
    for ci in sb.get("control_input", []):
        c = (ci.get("control") or [{}])[0]
        if c.get("kind") == "CONTROL_SEQUENCE_CORRID":
            dtype = str(c.get("data_type", "TYPE_UINT64")).removeprefix("TYPE_")
        else:
            dtype = "FP32" if c.get("fp32_false_true") else "BOOL" if c.get("bool_false_true") else "INT32"
        out.append(TensorInfo(ci["name"], dtype, (1,)))
    out += [_tensor({"name": st["input_name"], **st}) for st in sb.get("state", [])]
    return out


def log_info(message: str) -> None:
    """Into Triton's log (the stub's pb_utils.Logger); printed where there is no stub (tests)."""
    try:
        pb_utils().Logger.log_info(message)
    except Exception:  # noqa: BLE001 - no stub (tests, a plain import) or no logger: the message still shows
        print(message)


BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_batched(requests: list[Any], args: ModelArgs, compute: BatchFn) -> list[Any]:
    """Run `compute` once over every request the dynamic batcher handed us, then split per request.

    One call per execution is what makes batching pay off (the per-call overhead dominates small
    models). Requests whose shapes cannot be concatenated fall back to one call each. A request
    that fails gets an error response; the others still answer.
    """
    feeds = request_feeds(requests, [t.name for t in args.fed])
    return run_merged(
        feeds,
        lambda feed, sizes: split_responses(compute(feed), sizes),
        lambda feed: respond(compute(feed)),
        lambda exc: error_response(args.name, exc),
        merge=args.max_batch_size > 0,
    )


def request_feeds(requests: list[Any], names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each request's input arrays by name (inputs a request leaves out are absent)."""
    pb = pb_utils()
    feeds = []
    for r in requests:
        feed = {}
        for n in names:
            t = pb.get_input_tensor_by_name(r, n)
            if t is not None:
                feed[n] = t.as_numpy()
        feeds.append(feed)
    return feeds


def split_responses(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[Any]:
    """One response per request from outputs computed over the concatenated batch (see
    `split_rows`). The Python backend spends 60-100 µs per response already, so this stays lean:
    string conversion once for the batch, no per-request dict copies."""
    pb = pb_utils()
    converted = {k: _to_triton(v) for k, v in outputs.items()}
    return [
        pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in part.items()])
        for part in split_rows(converted, sizes)
    ]


def respond(outputs: dict[str, np.ndarray]) -> Any:
    pb = pb_utils()
    return pb.InferenceResponse(output_tensors=[pb.Tensor(k, _to_triton(v)) for k, v in outputs.items()])


def error_response(model: str, exc: BaseException) -> Any:
    """An error answer for one request; Triton sends it to that client only."""
    pb = pb_utils()
    return pb.InferenceResponse(error=pb.TritonError(f"{model}: {type(exc).__name__}: {exc}"))


def _to_triton(v: np.ndarray) -> np.ndarray:
    """Triton's STRING tensors are object arrays of bytes."""
    if v.dtype.kind in ("U", "O"):
        return np.array([x.encode() if isinstance(x, str) else x for x in v.ravel()], dtype=np.object_).reshape(v.shape)
    return np.ascontiguousarray(v)
