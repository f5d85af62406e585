"""The `router` plugin: A/B and canary splits by weight (sticky by key) and shadow traffic.

Metrics: `repoforge_router_rows_total{model,route}` (rows sent), `repoforge_router_errors_total{model,route}` (rows
whose route call failed), `repoforge_router_latency_us{model,route}` (each route call), `repoforge_router_weight{model,route}`,
`repoforge_shadow_rows_total{model,shadow,outcome=agree|disagree}`,
`repoforge_shadow_batches_total{model,shadow,outcome=ok|error|dropped}`, `repoforge_shadow_latency_us{model,shadow}`.

A route (or shadow) that is an ONNX model of the same repository served by repoforge's onnxruntime runner runs inside
this stub (`.local_model`): a BLS call costs more than a small model. Every other route is one BLS call per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..batch import run_merged, split_rows
from ..config import RouterConfig
from ..drift import DriftMonitor
from ..hashing import combine, stable_hash, to_unit
from ..names import (
    PLUGIN_PARAMETER,
    ROUTER_ERRORS,
    ROUTER_LATENCY,
    ROUTER_ROWS,
    ROUTER_WEIGHT,
    SHADOW_BATCHES,
    SHADOW_LATENCY,
    SHADOW_ROWS,
    STATE_DIR_ENV,
)
from ..triton_model import (
    ModelArgs,
    error_response,
    log_info,
    pb_utils,
    request_feeds,
    respond,
)
from ._common import (
    Metrics,
    plugin_config,
)
from .local_model import LocalModel, call


def route_rows(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Route index per row for uniform draws `u` in [0, 1) and non-negative weights (any scale)."""
    w = np.asarray(weights, dtype=np.float64)
    cum = np.cumsum(w)
    total = cum[-1] if len(cum) else 0.0
    if total <= 0:
        return np.zeros(len(u), dtype=np.int32)
    idx = np.searchsorted(cum / total, u, side="right")
    # zero-weight routes at the end can never be picked: clamp to the last route with weight
    last = int(np.nonzero(w > 0)[0][-1])
    return np.minimum(idx, last).astype(np.int32)


def sticky_draws(key: np.ndarray, rows: int) -> np.ndarray:
    """Uniform [0, 1) per row from the stable hash of each row's key value(s)."""
    k = np.asarray(key).reshape(rows, -1)
    if k.shape[1] == 1:
        return to_unit(stable_hash(k[:, 0]))
    return to_unit(combine([stable_hash(k[:, j]) for j in range(k.shape[1])]))


def state_path(model: str) -> str:
    """Where the instances of `model` in this server share their run-time weights: a folder of this server's own
    (the stub's parent is the server: `<REPOFORGE_STATE_DIR or tmp>/repoforge-router/<server pid>/`), removed
    with the model in `finalize`, so a clean stop leaves nothing behind."""
    root = os.environ.get(STATE_DIR_ENV) or tempfile.gettempdir()
    return os.path.join(root, "repoforge-router", str(os.getppid()), f"{model}.json")


class RouterRunner:
    """Splits rows between routes (weights, canary, sticky by key), shadows a copy, exports route metrics."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        cfg = plugin_config(self.args)
        if not isinstance(cfg, RouterConfig):
            raise TypeError(f"{self.args.name}: runner 'router' got a {cfg.kind} config")
        self.cfg = cfg
        self.targets = cfg.targets
        self.weights = np.asarray(cfg.initial_weights(), dtype=np.float64)
        self.digest = hashlib.sha1(self.args.parameters[PLUGIN_PARAMETER].encode()).hexdigest()[:16]
        self.state_path = state_path(self.args.name)
        self._state_mtime = 0
        self.data_inputs = [t for t in self.args.inputs if t.name != cfg.weights_input]
        self.outputs = [t.name for t in self.args.outputs if t.name != cfg.route_output]
        self.metrics = Metrics(self.args.name)
        self.drift = DriftMonitor.from_args(self.args, cfg.drift, self.metrics, self.data_inputs)  # repoforge_drift_psi
        self.rng = np.random.default_rng()
        self._pending = 0
        self._lock = threading.Lock()
        self.shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow") if cfg.shadow else None
        self.local = self._local_models()
        self._read_state()
        self._export_weights()

    def _local_models(self) -> dict[tuple[str, int], LocalModel]:
        """The routes (and shadow) this stub runs itself instead of through BLS (see .local_model), by (model,
        version); `in_process: false` in the router's config keeps every route on BLS."""
        out: dict[tuple[str, int], LocalModel] = {}
        if not self.cfg.in_process:
            return out
        wanted = [(t.model, t.version) for t in self.targets]
        if self.cfg.shadow is not None:
            wanted.append((self.cfg.shadow.model, self.cfg.shadow.version))
        for key in dict.fromkeys(wanted):
            local, why = LocalModel.find(self.args.repository, key[0], key[1], self.args)
            if local is not None:
                out[key] = local
            log_info(f"{self.args.name}: route {key[0]} runs {'in process' if local else f'through BLS ({why})'}")
        return out

    def _call(
        self, model: str, version: int, feed: dict[str, np.ndarray], timeout_us: int | None = None
    ) -> dict[str, np.ndarray]:
        """One route call: in this stub where the route allows it (and Triton has it ready), else BLS."""
        return call(self.local.get((model, version)), model, version, feed, self.outputs, timeout_us)

    # -- weights shared by every instance of this model (same server), changeable at run time --
    def _read_state(self) -> None:
        try:
            st = os.stat(self.state_path)
        except OSError:
            return
        if st.st_mtime_ns == self._state_mtime:
            return
        self._state_mtime = st.st_mtime_ns
        try:
            with open(self.state_path) as fh:
                state = json.load(fh)
            if state.get("digest") == self.digest and len(state.get("weights", [])) == len(self.targets):
                self.weights = np.asarray(state["weights"], dtype=np.float64)
                self._export_weights()
        except (OSError, ValueError):
            pass

    def set_weights(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != len(self.targets) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"{self.cfg.weights_input} needs {len(self.targets)} non-negative weights with a positive sum, got {w.tolist()}"
            )
        self.weights = w / w.sum()
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"digest": self.digest, "weights": self.weights.tolist()}, fh)
        os.replace(tmp, self.state_path)
        self._state_mtime = os.stat(self.state_path).st_mtime_ns
        self._export_weights()

    def _draw(self, feed: dict[str, np.ndarray], rows: int, batched: bool) -> np.ndarray:
        """The route index of each row (`route_rows` over this batch's draws, with the weights' cumulative shares
        computed once per weight change; no draws at all while one route has all the weight)."""
        if self._only is not None:
            return np.full(rows, self._only, dtype=np.int32)
        if self.cfg.sticky_key is not None:
            key = feed[self.cfg.sticky_key]
            u = sticky_draws(key if batched else key.reshape(1, -1), rows)
        else:
            u = self.rng.random(rows)
        return np.minimum(np.searchsorted(self._cum, u, side="right"), self._last).astype(np.int32)

    def _export_weights(self) -> None:
        """Publish the weights (gauges) and precompute what `_draw` needs from them."""
        w = self.weights
        positive = np.flatnonzero(w > 0)
        self._only: int | None = int(positive[0]) if len(positive) == 1 else (0 if len(positive) == 0 else None)
        self._cum = np.cumsum(w) / (w.sum() or 1.0)
        self._last = int(positive[-1]) if len(positive) else 0
        total = float(self.weights.sum()) or 1.0
        for t, w in zip(self.targets, self.weights, strict=True):
            self.metrics.set(ROUTER_WEIGHT, "Current traffic share of each route", float(w) / total, route=t.model)

    # -- serving --
    def execute(self, requests: list[Any]) -> list[Any]:
        self._read_state()
        pb = pb_utils()
        ok: list[Any] = []
        early: dict[int, Any] = {}
        wname = self.cfg.weights_input
        for i, r in enumerate(requests):
            if wname:
                t = pb.get_input_tensor_by_name(r, wname)
                if t is not None:
                    try:
                        self.set_weights(t.as_numpy().reshape(-1, len(self.targets))[0])
                    except ValueError as exc:
                        early[i] = error_response(self.args.name, exc)
                        continue
            ok.append(r)
        answered = iter(self._answer(request_feeds(ok, [t.name for t in self.data_inputs])) if ok else [])
        return [early[i] if i in early else next(answered) for i in range(len(requests))]

    def _answer(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        """One routing pass over every request the batcher handed us (one BLS call per route), or one pass
        per request where they cannot be concatenated. A route call that fails fails only the requests with
        rows in it: the others still answer, and each row is counted once, as the clients see it."""
        batched = self.args.max_batch_size > 0
        return run_merged(
            feeds,
            self._route,
            lambda f: self._route(f, [next(iter(f.values())).shape[0] if batched else 1])[0],
            lambda exc: error_response(self.args.name, exc),
            merge=batched,
        )

    def _route(self, feed: dict[str, np.ndarray], sizes: list[int]) -> list[Any]:
        outputs, failed = self._compute(feed, np.repeat(np.arange(len(sizes)), sizes))
        parts = split_rows(outputs, sizes) if self.args.max_batch_size > 0 else [outputs]
        return [error_response(self.args.name, failed[i]) if i in failed else respond(p) for i, p in enumerate(parts)]

    def _compute(
        self, feed: dict[str, np.ndarray], owner: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[int, BaseException]]:
        """Outputs for every row, and the error of each request (by index in `owner`) a route call failed."""
        self.drift.observe(feed)
        batched = self.args.max_batch_size > 0
        rows = int(owner.shape[0])
        route = self._draw(feed, rows, batched)
        counts = np.bincount(route, minlength=len(self.targets))
        outputs: dict[str, np.ndarray] = {}
        failed: dict[int, BaseException] = {}
        for r in np.flatnonzero(counts).tolist():
            target = self.targets[r]
            n = int(counts[r])
            whole = n == rows  # every row on one route (the usual case): no copies in or out
            sel = None if whole else np.flatnonzero(route == r)
            part = {k: v[sel] for k, v in feed.items()} if batched and sel is not None else feed
            self.metrics.inc(ROUTER_ROWS, "Rows sent to each route", n, route=target.model)
            t0 = time.perf_counter()
            try:
                got = self._call(target.model, target.version, part)
            except Exception as exc:  # noqa: BLE001 - counted per route, answered to the requests it touched
                self.metrics.inc(ROUTER_ERRORS, "Rows whose route call failed", n, route=target.model)
                for i in np.unique(owner if sel is None else owner[sel]).tolist():
                    failed[int(i)] = exc
                continue
            finally:
                self.metrics.observe(
                    ROUTER_LATENCY,
                    "Latency of each route call, in microseconds",
                    (time.perf_counter() - t0) * 1e6,
                    route=target.model,
                )
            for name, value in got.items():
                if not batched or sel is None:
                    outputs[name] = value
                    continue
                if name not in outputs:
                    outputs[name] = np.zeros((rows, *value.shape[1:]), dtype=value.dtype)
                outputs[name][sel] = value
        if self.cfg.route_output:
            outputs[self.cfg.route_output] = route.reshape(rows, 1) if batched else route.reshape(1)
        if self.shadow_pool is not None:
            keep = ~np.isin(owner, list(failed)) if failed else None
            if keep is None:
                self._shadow(feed, {k: outputs[k] for k in self.outputs})
            elif batched and keep.any():
                self._shadow({k: v[keep] for k, v in feed.items()}, {k: outputs[k][keep] for k in self.outputs})
        return outputs, failed

    # -- shadow: never changes (or delays) the primary answer --
    def _shadow(self, feed: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> None:
        sh = self.cfg.shadow
        assert sh is not None and self.shadow_pool is not None
        if sh.percent < 100 and self.rng.random() * 100 >= sh.percent:
            return
        with self._lock:
            if self._pending >= sh.max_pending:
                self.metrics.inc(SHADOW_BATCHES, "Shadow batches by outcome", 1, shadow=sh.model, outcome="dropped")
                return
            self._pending += 1
        feed_c = {k: np.array(v, copy=True) for k, v in feed.items()}
        primary_c = {k: np.array(v, copy=True) for k, v in primary.items()}
        try:
            self.shadow_pool.submit(self._shadow_call, feed_c, primary_c)
        except RuntimeError:  # pool shut down
            with self._lock:
                self._pending -= 1

    def _shadow_call(self, feed: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> None:
        sh = self.cfg.shadow
        assert sh is not None
        m = self.metrics
        t0 = time.perf_counter()
        try:
            got = self._call(sh.model, sh.version, feed, timeout_us=sh.timeout_ms * 1000)
            rows = next(iter(primary.values())).shape[0] if self.args.max_batch_size > 0 else 1
            agree = np.ones(rows, dtype=bool)
            for name, p in primary.items():
                s = got[name]
                if s.shape != p.shape:
                    agree[:] = False
                    break
                if p.dtype == np.object_:
                    same = s == p
                else:
                    same = np.isclose(s.astype(np.float64), p.astype(np.float64), rtol=sh.rtol, atol=sh.atol)
                agree &= np.asarray(same).reshape(rows, -1).all(axis=1)
            n_agree = int(agree.sum())
            m.inc(
                SHADOW_ROWS,
                "Shadow rows that agree/disagree with the primary answer",
                n_agree,
                shadow=sh.model,
                outcome="agree",
            )
            m.inc(
                SHADOW_ROWS,
                "Shadow rows that agree/disagree with the primary answer",
                rows - n_agree,
                shadow=sh.model,
                outcome="disagree",
            )
            m.inc(SHADOW_BATCHES, "Shadow batches by outcome", 1, shadow=sh.model, outcome="ok")
        except Exception:  # noqa: BLE001 - a failing shadow is only a metric
            m.inc(SHADOW_BATCHES, "Shadow batches by outcome", 1, shadow=sh.model, outcome="error")
        finally:
            m.observe(
                SHADOW_LATENCY,
                "Shadow call latency in microseconds",
                (time.perf_counter() - t0) * 1e6,
                shadow=sh.model,
            )
            with self._lock:
                self._pending -= 1

    def finalize(self) -> None:
        self.drift.close()
        if self.shadow_pool is not None:
            self.shadow_pool.shutdown(wait=False, cancel_futures=True)
        # The weights live as long as the model: a clean stop or an unload leaves no state file (nor its folders).
        folder = os.path.dirname(self.state_path)
        for path, remove in ((self.state_path, os.remove), (folder, os.rmdir), (os.path.dirname(folder), os.rmdir)):
            try:
                remove(path)
            except OSError:  # another instance removed it first, or other models still use the folder
                pass
