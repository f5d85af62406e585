"""repoforge's TorchServe handler: the logic behind the thin `repoforge_handler.py` shipped in each .mar.

Runs inside TorchServe's Python workers (which import `ts` and torch), so it is only imported there.
What it does, per batch TorchServe hands it:

* **preprocess**: one entry per request. A request is JSON `{"<input name>": [[...]], ...}`,
  `{"data": [[...]]}` / a bare JSON array for single-input models, or `{"data": {"<input>": ...}}`.
  With `max_batch_size > 0` each input carries a leading batch axis (`[[...8 values...]]`, up to
  max_batch_size rows); a request without it (`[...8 values...]`) is one row, answered without it.
  Names, dtypes and shapes are checked against the spec; a bad request gets HTTP 400 with the reason
  while the other requests of the batch are answered normally.
* **inference**: the valid requests are concatenated along the batch axis (in chunks of at most
  max_batch_size rows) and run as one call; a failed merged call is retried request by request,
  so one bad request cannot fail the others.
* **postprocess**: one JSON entry per request, `{"<output name>": [...]}`, with the response headers
  `X-Repoforge-Batch-Size` (requests in the model call that answered it; 0 for a cache hit) and,
  with the cache on, `X-Repoforge-Cache: hit|miss`.

Options come from the archive's model-config.yaml (`handler:` section, written by repoforge):
format, serialized_file, model_file, inputs, outputs, max_batch_size, cache_entries,
intra_op_threads, parameters, workflows. Subclass `RepoforgeHandler` (and point `handler:` in the
spec at your file) to change one stage and keep the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ts.torch_handler.base_handler import BaseHandler

from .. import lazy
from ..batch import run_merged, split_rows
from ..dtypes import numpy_dtype
from ..pipeline import FeaturePipeline
from .eager import load_eager, split_model_file

logger = logging.getLogger(__name__)

BATCH_HEADER = "X-Repoforge-Batch-Size"
CACHE_HEADER = "X-Repoforge-Cache"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    dims: list[int]
    reshape: list[int] | None = None
    optional: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tensor:
        return cls(
            name=d["name"],
            dtype=d.get("dtype", "FP32"),
            dims=list(d.get("dims", [])),
            reshape=d.get("reshape"),
            optional=bool(d.get("optional", False)),
        )


@dataclass
class HandlerConfig:
    format: str
    serialized_file: str | None
    model_file: str | None
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch_size: int = 0
    cache_entries: int = 0
    intra_op_threads: int = 1
    parameters: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] | None = None

    @classmethod
    def from_yaml(cls, model_yaml_config: dict[str, Any] | None) -> HandlerConfig:
        h = dict((model_yaml_config or {}).get("handler") or {})
        if "format" not in h:
            raise RuntimeError(
                "model-config.yaml has no `handler: {format: ...}` section; was this archive built by repoforge?"
            )
        return cls(
            format=h["format"],
            serialized_file=h.get("serialized_file"),
            model_file=h.get("model_file"),
            inputs=[Tensor.from_dict(t) for t in h.get("inputs") or []],
            outputs=[Tensor.from_dict(t) for t in h.get("outputs") or []],
            max_batch_size=int(h.get("max_batch_size", 0)),
            cache_entries=int(h.get("cache_entries", 0)),
            intra_op_threads=int(h.get("intra_op_threads", 1)),
            parameters=dict(h.get("parameters") or {}),
            workflows=dict(h.get("workflows") or {}),
            plugin=h.get("plugin"),
        )


# ---------------------------------------------------------------------------------------------
# Per-request results
# ---------------------------------------------------------------------------------------------
class RequestError(Exception):
    """One request failed; `status` becomes its HTTP status (the others in the batch still answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        kind = {400: "BadRequest", 422: "UnprocessableEntity"}.get(self.status, "InternalServerError")
        return {"code": self.status, "type": kind, "message": self.message}


@dataclass
class Request:
    """A parsed request: arrays with their batch axis, and whether the client left the axis out."""

    feeds: dict[str, np.ndarray]
    rows: int
    single: bool = False
    cache_key: str | None = None


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    batch_size: int = 1  # requests in the model call that produced this result
    cached: bool = False


# ---------------------------------------------------------------------------------------------
# Runners: one model call over a batch
# ---------------------------------------------------------------------------------------------
class OnnxModel:
    def __init__(self, path: str, cfg: HandlerConfig, use_gpu: bool) -> None:
        ort = lazy.onnxruntime()

        so = ort.SessionOptions()
        if cfg.intra_op_threads > 0:
            so.intra_op_num_threads = cfg.intra_op_threads
        so.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path, so, providers=providers)
        self.output_names = [t.name for t in cfg.outputs] or [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))


class TorchModel:
    """TorchScript or eager: inputs are passed positionally in spec order, outputs named in spec order."""

    def __init__(self, module: Any, cfg: HandlerConfig, device: Any) -> None:
        torch = lazy.torch()

        self.torch, self.module, self.device = torch, module, device
        self.input_names = [t.name for t in cfg.inputs]
        self.output_names = [t.name for t in cfg.outputs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        args = [
            torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names if n in feeds
        ]
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, dict):
            return {k: _to_numpy(v) for k, v in out.items() if not self.output_names or k in self.output_names}
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if self.output_names and len(outs) != len(self.output_names):
            raise RuntimeError(
                f"the model returned {len(outs)} output(s) but the spec declares {len(self.output_names)}: "
                f"{', '.join(self.output_names)}"
            )
        names = self.output_names or [f"output{i}" for i in range(len(outs))]
        return {n: _to_numpy(o) for n, o in zip(names, outs, strict=True)}


class FeaturesModel:
    """The features plugin: raw columns → one FP32 feature row per input row, computed by the same
    `..pipeline` the Triton plugin runs (one implementation for both targets)."""

    def __init__(self, cfg: HandlerConfig) -> None:
        self.pipeline = FeaturePipeline(cfg.plugin)  # plain JSON the build wrote (`..config.FeaturesConfig`)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.pipeline.output_name: self.pipeline.transform(feeds)}


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def load_model(cfg: HandlerConfig, model_dir: str, device: Any, use_gpu: bool) -> Any:
    """The callable `feeds -> outputs` for the archive's model file."""
    if cfg.format == "features":
        return FeaturesModel(cfg)
    if not cfg.serialized_file:
        raise RuntimeError(f"format {cfg.format} needs a serialized file in the archive")
    path = os.path.join(model_dir, cfg.serialized_file)
    if cfg.format == "onnx":
        return OnnxModel(path, cfg, use_gpu)
    torch = lazy.torch()

    if cfg.intra_op_threads > 0:
        torch.set_num_threads(cfg.intra_op_threads)
    if cfg.format == "torchscript":
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript (DeprecationWarning on load)
            warnings.simplefilter("ignore", DeprecationWarning)
            return TorchModel(torch.jit.load(path, map_location=device).eval(), cfg, device)
    if cfg.format == "pytorch":
        file, cls = split_model_file(cfg.model_file or "")
        return TorchModel(load_eager(Path(model_dir) / file, Path(path), class_name=cls, device=device), cfg, device)
    raise RuntimeError(f"repoforge's handler cannot serve format {cfg.format!r}")


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
class LRUCache:
    """Results by request content, per worker process (not shared between workers)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._data: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: dict[str, np.ndarray]) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def request_key(feeds: dict[str, np.ndarray], single: bool) -> str:
    h = hashlib.sha256(b"single" if single else b"batch")
    for name in sorted(feeds):
        a = feeds[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(json.dumps(a.tolist()).encode() if a.dtype == object else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The handler
# ---------------------------------------------------------------------------------------------
class RepoforgeHandler(BaseHandler):
    """Batch-aware JSON handler for ONNX, TorchScript and eager (state_dict) models."""

    def initialize(self, context: Any) -> None:
        self.context = context
        self.manifest = context.manifest
        self.model_yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.cfg = HandlerConfig.from_yaml(self.model_yaml_config)
        props = context.system_properties
        self.model_dir = props.get("model_dir")
        gpu_id = props.get("gpu_id")
        torch = lazy.torch()

        use_gpu = gpu_id is not None and torch.cuda.is_available()
        self.map_location = "cuda" if use_gpu else "cpu"
        self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        self.model = load_model(self.cfg, self.model_dir, self.device, use_gpu)
        self.cache = LRUCache(self.cfg.cache_entries) if self.cfg.cache_entries > 0 else None
        self.feed = self._workflow_feed(context.model_name)
        self.initialized = True
        logger.info(
            "repoforge handler ready: %s (%s), max_batch_size %d, cache %s",
            context.model_name,
            self.cfg.format,
            self.cfg.max_batch_size,
            self.cfg.cache_entries or "off",
        )

    def _workflow_feed(self, served_name: str) -> dict[str, Any] | None:
        """Inside a TorchServe workflow the model is served as `<workflow>__<node>` and its inputs come
        from the outputs of its parent nodes; the build wrote which input comes from where."""
        for wf, spec in self.cfg.workflows.items():
            if served_name.startswith(f"{wf}__"):
                return spec
        return None

    # -- stages ------------------------------------------------------------------------------
    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        start = time.time()
        self.context = context
        parsed = self.preprocess(data)
        results = self.inference(parsed)
        out = self.postprocess(results)
        if getattr(context, "metrics", None) is not None:
            context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return out

    def preprocess(self, data: list[dict[str, Any]]) -> list[Request | RequestError]:
        """One entry per request: its arrays, or the reason it cannot be served."""
        out: list[Request | RequestError] = []
        for row in data:
            try:
                payload = self._feed_from_parents(row) if self.feed else _payload(row)
                out.append(self.parse(payload))
            except RequestError as exc:
                out.append(exc)
        return out

    def inference(
        self, requests: list[Request | RequestError], *args: Any, **kwargs: Any
    ) -> list[Result | RequestError]:
        """Run every valid request, merged into as few model calls as the batch allows."""
        results: list[Result | RequestError | None] = [r if isinstance(r, RequestError) else None for r in requests]
        todo: list[int] = []
        for i, r in enumerate(requests):
            if isinstance(r, Request):
                hit = self.cache.get(r.cache_key) if self.cache is not None and r.cache_key else None
                if hit is not None:
                    results[i] = Result(hit, batch_size=0, cached=True)
                else:
                    todo.append(i)
        for group in self._groups([(i, requests[i]) for i in todo]):  # type: ignore[misc]
            for i, res in zip(group, self._run_group([requests[i] for i in group]), strict=True):  # type: ignore[misc]
                results[i] = res
                if isinstance(res, Result) and self.cache is not None:
                    key = requests[i].cache_key  # type: ignore[union-attr]
                    if key:
                        self.cache.put(key, res.outputs)
        return [r if r is not None else RequestError(500, "no result") for r in results]

    def postprocess(self, results: list[Result | RequestError]) -> list[str]:
        """One JSON string per request; failed requests get their status and an error body."""
        out = []
        for idx, r in enumerate(results):
            self._header(idx, "content-type", "application/json")
            if isinstance(r, RequestError):
                self.context.set_response_status(r.status, r.message[:200], idx)
                out.append(json.dumps(r.body()))
                continue
            self._header(idx, BATCH_HEADER, str(r.batch_size))
            if self.cache is not None:
                self._header(idx, CACHE_HEADER, "hit" if r.cached else "miss")
            out.append(json.dumps({k: _jsonable(v) for k, v in r.outputs.items()}))
        return out

    # -- helpers -----------------------------------------------------------------------------
    def parse(self, payload: Any) -> Request:
        """Check one request's JSON against the spec's inputs and make arrays with a batch axis."""
        cfg = self.cfg
        names = [t.name for t in cfg.inputs]
        values = _named_values(payload, names)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise RequestError(
                400, f"unknown input(s) {', '.join(unknown)}; this model's inputs are {', '.join(names)}"
            )
        feeds: dict[str, np.ndarray] = {}
        rows: int | None = None
        single: bool | None = None
        for t in cfg.inputs:
            if t.name not in values:
                if t.optional:
                    continue
                raise RequestError(400, f"missing input '{t.name}'; this model's inputs are {', '.join(names)}")
            arr = _array(t, values[t.name])
            if cfg.max_batch_size > 0:
                if arr.ndim == len(t.dims):
                    arr, this_single = arr[None, ...], True
                elif arr.ndim == len(t.dims) + 1:
                    this_single = False
                else:
                    raise RequestError(
                        400,
                        f"input '{t.name}' has shape {list(arr.shape)}; expected [rows] + {t.dims} "
                        f"or {t.dims} for one row",
                    )
                if single is not None and this_single != single:
                    raise RequestError(400, "send every input with its batch axis, or none of them")
                single = this_single
                n = arr.shape[0]
                if rows is not None and n != rows:
                    raise RequestError(400, f"inputs disagree on the number of rows ({rows} vs {n} for '{t.name}')")
                rows = n
                if n < 1 or n > cfg.max_batch_size:
                    raise RequestError(
                        400, f"input '{t.name}' has {n} rows; this model takes 1 to {cfg.max_batch_size} per request"
                    )
                item_shape = list(arr.shape[1:])
            else:
                item_shape = list(arr.shape)
            if not _dims_match(item_shape, t.dims):
                raise RequestError(
                    400,
                    f"input '{t.name}' has shape {list(arr.shape)}; expected "
                    + (f"[rows] + {t.dims}" if cfg.max_batch_size > 0 else f"{t.dims}"),
                )
            if t.reshape is not None:
                try:
                    arr = arr.reshape(([arr.shape[0]] if cfg.max_batch_size > 0 else []) + list(t.reshape))
                except ValueError as exc:
                    raise RequestError(400, f"input '{t.name}' cannot be reshaped to {t.reshape}: {exc}") from None
            feeds[t.name] = arr
        req = Request(feeds=feeds, rows=rows or 1, single=bool(single))
        if self.cache is not None:
            req.cache_key = request_key(feeds, req.single)
        return req

    def _groups(self, items: list[tuple[int, Request]]) -> list[list[int]]:
        """Requests that can share one model call: same inputs and item shapes, rows within max_batch_size."""
        if self.cfg.max_batch_size <= 0:
            return [[i] for i, _ in items]
        by_sig: dict[tuple[Any, ...], list[tuple[int, Request]]] = {}
        for i, r in items:
            sig = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in r.feeds.items()))
            by_sig.setdefault(sig, []).append((i, r))
        groups: list[list[int]] = []
        for members in by_sig.values():
            current: list[int] = []
            rows = 0
            for i, r in members:
                if current and rows + r.rows > self.cfg.max_batch_size:
                    groups.append(current)
                    current, rows = [], 0
                current.append(i)
                rows += r.rows
            if current:
                groups.append(current)
        return groups

    def _run_group(self, reqs: list[Request]) -> list[Result | RequestError]:
        """One model call for the group (`run_merged`), else one per request; a failing request fails alone."""
        answers = run_merged(
            [r.feeds for r in reqs],
            self._merged(reqs),
            self._alone,
            self._failed,
            on_merge_error=lambda exc: logger.warning(
                "merged batch of %d requests failed (%s); retrying them one by one", len(reqs), exc
            ),
        )
        return [
            Result(_unbatch(a.outputs, r.single), batch_size=a.batch_size) if isinstance(a, Result) else a
            for r, a in zip(reqs, answers, strict=True)
        ]

    def _merged(self, reqs: list[Request]) -> Any:
        def run(feed: dict[str, np.ndarray], sizes: list[int]) -> list[Result | RequestError]:
            parts = split_rows(self.model(feed), sizes)  # ValueError when outputs are not per row: one by one
            return [Result(part, batch_size=len(reqs)) for part in parts]

        return run

    def _alone(self, feed: dict[str, np.ndarray]) -> Result | RequestError:
        return Result(self.model(feed), batch_size=1)

    def _failed(self, exc: BaseException) -> Result | RequestError:
        logger.error("inference failed for one request", exc_info=exc)
        return RequestError(500, f"{self.context.model_name}: {type(exc).__name__}: {exc}")

    def _feed_from_parents(self, row: dict[str, Any]) -> dict[str, Any]:
        """Workflow node: build this model's inputs from its parents' JSON outputs."""
        assert self.feed is not None
        parents: list[str] = self.feed["parents"]
        got: dict[str, Any] = {}
        for key, value in row.items():
            node = key if key in parents else (parents[0] if len(parents) == 1 and key in ("body", "data") else None)
            if node is not None:
                got[node] = _json(value)
        payload: dict[str, Any] = {}
        for name, (node, key) in self.feed["inputs"].items():
            parent = got.get(node)
            if not isinstance(parent, dict) or key not in parent:
                if isinstance(parent, dict) and "code" in parent and "message" in parent:
                    raise RequestError(int(parent["code"]), str(parent["message"]))
                raise RequestError(
                    500, f"workflow: '{node}' gave no '{key}' for input '{name}' (got keys {sorted(got)})"
                )
            payload[name] = parent[key]
        return payload

    def _header(self, idx: int, key: str, value: str) -> None:
        try:
            self.context.set_response_header(idx, key, value)
        except (AttributeError, IndexError, TypeError):  # no request processor (e.g. unit tests)
            pass


# ---------------------------------------------------------------------------------------------
# JSON <-> arrays
# ---------------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    """Bytes (no JSON content type) or str (text/*) → the JSON they hold; parsed JSON passes through."""
    if isinstance(value, (bytes, bytearray, str)):
        try:
            return json.loads(value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError(
                400, 'the request body is not JSON; send Content-Type: application/json with {"<input name>": [[...]]}'
            ) from None
    return value


def _payload(row: dict[str, Any]) -> Any:
    """The request's JSON: TorchServe gives a parsed body for application/json, bytes otherwise."""
    body = row.get("body")
    if body is None:
        body = row.get("data")
    if body is None:
        raise RequestError(
            400, 'empty request; send JSON {"<input name>": [[...]]} with Content-Type: application/json'
        )
    return _json(body)


def _named_values(payload: Any, names: list[str]) -> dict[str, Any]:
    if isinstance(payload, dict):
        if any(n in payload for n in names):
            return payload
        if "data" in payload and len(payload) == 1:
            inner = payload["data"]
            if isinstance(inner, dict):
                return inner
            if len(names) == 1:
                return {names[0]: inner}
            raise RequestError(
                400,
                f'this model has {len(names)} inputs; send {{"data": {{{", ".join(repr(n) for n in names)}: ...}}}}',
            )
        if len(names) == 1 and not payload:
            raise RequestError(400, f"missing input '{names[0]}'")
        return payload
    if isinstance(payload, list) and len(names) == 1:
        return {names[0]: payload}
    raise RequestError(400, f"expected a JSON object with the inputs {', '.join(names)}, got {type(payload).__name__}")


def _array(t: Tensor, value: Any) -> np.ndarray:
    try:
        if t.dtype == "BYTES":
            return np.array(value, dtype=object)
        np_type = np.float32 if t.dtype == "BF16" else numpy_dtype(t.dtype)
        try:
            arr = np.asarray(value)
        except ValueError:
            raise ValueError("not a rectangular array (rows of different lengths)") from None
        if arr.dtype == object or arr.dtype.kind in ("U", "S"):
            raise ValueError("not a rectangular array of numbers")
        if np.issubdtype(np_type, np.integer) and arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{t.dtype} input with fractional values")
        return arr.astype(np_type, copy=False)
    except (ValueError, TypeError) as exc:
        raise RequestError(400, f"input '{t.name}' ({t.dtype}): {exc}") from None


def _dims_match(shape: list[int], dims: list[int]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _unbatch(outputs: dict[str, np.ndarray], single: bool) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in outputs.items()} if single else outputs


def _jsonable(v: np.ndarray) -> Any:
    if v.dtype == object or v.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(v).tolist()
    return v.tolist()
