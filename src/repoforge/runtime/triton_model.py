"""Shared plumbing for repoforge's Triton Python backends: config parsing, batching of requests,
and per-request error responses, so each runner only says how to compute one batch."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


def pb_utils() -> Any:
    """`triton_python_backend_utils` exists only inside the stub; import it when first needed."""
    return importlib.import_module("triton_python_backend_utils")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # Triton name without TYPE_, e.g. FP32, STRING


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

    @classmethod
    def parse(cls, args: dict[str, str]) -> "ModelArgs":
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        return cls(
            name=args["model_name"], version=args["model_version"], repository=args["model_repository"],
            max_batch_size=int(cfg.get("max_batch_size", 0)),
            inputs=[TensorInfo(t["name"], t["data_type"].removeprefix("TYPE_")) for t in cfg.get("input", [])],
            outputs=[TensorInfo(t["name"], t["data_type"].removeprefix("TYPE_")) for t in cfg.get("output", [])],
            parameters=params,
        )


BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_batched(requests: list[Any], args: ModelArgs, compute: BatchFn) -> list[Any]:
    """Run `compute` once over every request the dynamic batcher handed us, then split per request.

    One call per execution is what makes batching pay off (the per-call overhead dominates small
    models). Requests whose shapes cannot be concatenated fall back to one call each. A request
    that fails gets an error response; the others still answer.
    """
    feeds = request_feeds(requests, [t.name for t in args.inputs])
    if len(feeds) > 1 and args.max_batch_size > 0 and _concatenable(feeds):
        sizes = [next(iter(f.values())).shape[0] for f in feeds]
        try:
            merged = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in feeds[0]}
            out = compute(merged)
            cuts = np.cumsum(sizes)[:-1]
            parts = {k: np.split(v, cuts, axis=0) for k, v in out.items()}
            return [respond({k: parts[k][i] for k in parts}) for i in range(len(feeds))]
        except Exception:  # one bad request must not fail the others: retry them one by one
            pass
    responses = []
    for f in feeds:
        try:
            responses.append(respond(compute(f)))
        except Exception as exc:  # noqa: BLE001 - reported to the client as this request's error
            responses.append(error_response(args.name, exc))
    return responses


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


def respond(outputs: dict[str, np.ndarray]) -> Any:
    pb = pb_utils()
    return pb.InferenceResponse(output_tensors=[pb.Tensor(k, _to_triton(v)) for k, v in outputs.items()])


def error_response(model: str, exc: BaseException) -> Any:
    """An error answer for one request; Triton sends it to that client only."""
    pb = pb_utils()
    return pb.InferenceResponse(error=pb.TritonError(f"{model}: {type(exc).__name__}: {exc}"))


def _concatenable(feeds: list[dict[str, np.ndarray]]) -> bool:
    first = feeds[0]
    return all(f.keys() == first.keys() and all(f[k].shape[1:] == first[k].shape[1:] for k in f) for f in feeds)


def _to_triton(v: np.ndarray) -> np.ndarray:
    """Triton's STRING tensors are object arrays of bytes."""
    if v.dtype.kind in ("U", "O"):
        return np.array([x.encode() if isinstance(x, str) else x for x in v.ravel()], dtype=np.object_).reshape(v.shape)
    return np.ascontiguousarray(v)
