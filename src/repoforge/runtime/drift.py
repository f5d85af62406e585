"""Drift in the serving path: PSI of each monitored input feature over its last `window` rows, against the
reference profile the build copied into the model folder (`drift:` on the features and router plugins).

Pure numpy, made for the request path. A request only copies its input arrays onto a pending list; every
`flush_rows` rows or `interval_s` seconds (a background thread in Triton, inline in tests) the pending rows
are binned at once (numeric: `searchsorted` on the profile's edges; categorical: one dict look-up per value;
missing values in their own bin, categories outside the profile in an "other" bin). Each feature keeps a
ring buffer of the last `window` rows' bin indices and running counts, so adding n rows costs
O(n log bins) and the PSI is O(bins) from the counts (`psi_from_frequencies`, the same formula and
epsilon as `repoforge drift report`): the window is never re-scanned. PSI is exported as the gauge
`repoforge_drift_psi{model,feature}` once a feature has `min_rows` rows, and nothing in here ever raises
into a request: a failure logs once and turns the monitor off.

Feature names follow `repoforge drift profile` on an `.npz`: an input with one value per row is `NAME`
(`NAME[0]` is accepted too), an input of dims [k] gives `NAME[0]` .. `NAME[k-1]`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal, Protocol

import numpy as np

from .names import DRIFT_PSI, DRIFT_REFERENCE
from .triton_model import log_info

#: Floor of a bin's frequency in the PSI (an empty bin would make it infinite); `repoforge drift report` uses it too.
EPSILON = 1e-4


def psi_from_frequencies(ref: np.ndarray, cur: np.ndarray) -> float:
    """sum (cur - ref) * ln(cur / ref) over bins, each frequency floored at EPSILON."""
    r, c = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


Kind = Literal["numeric", "categorical"]
METRIC = DRIFT_PSI
METRIC_HELP = "Population stability index of an input feature over the last window rows vs the reference profile"
#: PSI is not exported until a feature has this many rows (or the whole window, when smaller).
MIN_ROWS = 1000
FLUSH_ROWS = 1024
INTERVAL_S = 1.0
#: Input dtypes (Triton names) a numeric / categorical feature may come from.
TEXT_DTYPES = ("BYTES", "STRING")
CATEGORICAL_DTYPES = (*TEXT_DTYPES, "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


class GaugeSink(Protocol):
    """What the monitor needs of `runtime.plugins._common.Metrics`."""

    def set(self, name: str, description: str, value: float, **labels: str) -> None: ...


@dataclass(frozen=True)
class Source:
    """Where a profiled feature comes from: column `column` of input `input` seen as [rows, k]."""

    feature: str
    input: str
    column: int
    kind: Kind
    dtype: str


@dataclass(frozen=True)
class InputInfo:
    """An input tensor as the plan and the runtime both know it: dims per row (without the batch dimension)."""

    name: str
    dtype: str
    dims: tuple[int, ...]


def feature_names(t: InputInfo) -> list[tuple[str, int]] | None:
    """(feature name, column) pairs an input provides, the way `drift profile` names an .npz's columns; None
    when its size per row is not fixed (a dim of -1)."""
    if any(d < 0 for d in t.dims):
        return None
    k = math.prod(t.dims) if t.dims else 1
    if k == 1:
        return [(t.name, 0), (f"{t.name}[0]", 0)]
    return [(f"{t.name}[{j}]", j) for j in range(k)]


def match_features(
    features: Mapping[str, Mapping[str, Any]], inputs: Sequence[InputInfo]
) -> tuple[list[Source], list[str], list[str]]:
    """Sources of the profile's features in `inputs`, the problems (one message each) and the inputs the
    profile does not cover (not monitored). Shared by the build (located spec errors) and the runtime."""
    by_feature: dict[str, tuple[InputInfo, int]] = {}
    variable: dict[str, InputInfo] = {}
    for t in inputs:
        names = feature_names(t)
        if names is None:
            variable[t.name] = t
            continue
        for name, col in names:
            by_feature.setdefault(name, (t, col))
    sources: list[Source] = []
    problems: list[str] = []
    missing: list[str] = []
    used: set[str] = set()
    for name, feat in features.items():
        hit = by_feature.get(name)
        if hit is None:
            base = name.split("[", 1)[0]
            if base in variable:
                problems.append(
                    f"feature '{name}': input '{base}' has dims {list(variable[base].dims)}, not a fixed size"
                )
            else:
                missing.append(name)
            continue
        t, col = hit
        kind = feat.get("kind")
        if kind == "numeric" and t.dtype in TEXT_DTYPES:
            problems.append(f"feature '{name}' is numeric in the profile, but input '{t.name}' is {t.dtype}")
            continue
        if kind == "categorical" and t.dtype not in CATEGORICAL_DTYPES:
            problems.append(f"feature '{name}' is categorical in the profile, but input '{t.name}' is {t.dtype}")
            continue
        sources.append(Source(name, t.name, col, "numeric" if kind == "numeric" else "categorical", t.dtype))
        used.add(t.name)
    if missing:
        given = ", ".join(n for t in inputs for n, _ in (feature_names(t) or [(f"{t.name}[...]", 0)])[:1]) or "none"
        problems.insert(
            0,
            f"the reference profile has feature{'s' if len(missing) > 1 else ''} {', '.join(missing)} that "
            f"{'are' if len(missing) > 1 else 'is'} not among this model's inputs (inputs: {given}; an input of "
            "dims [k] gives NAME[0]..NAME[k-1])",
        )
    uncovered = [t.name for t in inputs if t.name not in used]
    return sources, problems, uncovered


class FeatureWindow:
    """The last `window` bin indices of one feature and their counts, with the reference frequencies."""

    def __init__(self, source: Source, feature: Mapping[str, Any], window: int) -> None:
        self.source = source
        if source.kind == "numeric":
            self.edges = np.asarray(feature["edges"], dtype=np.float64)
            self.ref = np.append(np.asarray(feature["frequencies"], dtype=np.float64), float(feature["missing"]))
        else:
            cats = list(feature["categories"])
            self.ref = np.array([*feature["categories"].values(), feature["other"], feature["missing"]], np.float64)
            n_cat = len(cats)
            self.other, self.missing = n_cat, n_cat + 1
            pos: dict[Any, int] = {}
            for i, c in enumerate(cats):
                pos[c] = i
                pos[c.encode("utf-8")] = i  # Triton's BYTES arrive as bytes
            pos.setdefault("", self.missing)  # an empty string is a missing value (as for the plugins' `fill`)
            pos.setdefault(b"", self.missing)
            pos[None] = self.missing
            self.pos = pos
        self.bins = len(self.ref)
        self.ref_floor = np.maximum(self.ref, EPSILON)
        self.window = int(window)
        self.ring = np.zeros(self.window, dtype=np.int16 if self.bins < 2**15 else np.int32)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.pos_in_ring = 0
        self.filled = 0
        self.seen = 0

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """Bin index per value (the bins of `stats.frequencies`: regular bins, then other, then missing)."""
        if self.source.kind == "numeric":
            v = np.asarray(values, dtype=np.float64)
            idx = np.searchsorted(self.edges, v, side="left")
            nan = np.isnan(v)
            if nan.any():
                idx[nan] = self.bins - 1
            return idx
        if values.dtype == np.bool_:
            vals: list[Any] = ["true" if x else "false" for x in values.tolist()]
        elif values.dtype.kind in "iu":
            vals = [str(x) for x in values.tolist()]
        else:
            vals = values.tolist()
        return np.fromiter(map(self.pos.get, vals, repeat(self.other)), dtype=np.intp, count=len(vals))

    def add(self, values: np.ndarray) -> None:
        """Push the bins of `values` (1-D, oldest first) into the ring, updating the counts of what leaves it."""
        b = self.bin_of(values)
        n = len(b)
        if n == 0:
            return
        self.seen += n
        w = self.window
        if n >= w:  # the batch alone fills the window
            b = b[-w:]
            self.ring[:] = b
            self.counts = np.bincount(b, minlength=self.bins).astype(np.int64)
            self.pos_in_ring, self.filled = 0, w
            return
        start = self.pos_in_ring
        first = min(n, w - start)
        for lo, hi, part in ((start, start + first, b[:first]), (0, n - first, b[first:])):
            if hi <= lo:
                continue
            valid = min(hi, self.filled) - lo  # slots that held a row before (the rest were never written)
            if valid > 0:
                self.counts -= np.bincount(self.ring[lo : lo + valid], minlength=self.bins)
            self.ring[lo:hi] = part
        self.counts += np.bincount(b, minlength=self.bins)
        self.pos_in_ring = (start + n) % w
        self.filled = min(self.filled + n, w)

    @property
    def rows(self) -> int:
        return self.filled

    def frequencies(self) -> np.ndarray:
        return self.counts / max(self.filled, 1)

    def psi(self) -> float:
        """PSI of the window against the reference: O(bins), from the counts."""
        if self.filled == 0:
            return float("nan")
        return psi_from_frequencies(self.ref, self.counts / self.filled)


class DriftMonitor:
    """Windows of every monitored feature of one model; `observe` is all a request pays for."""

    def __init__(
        self,
        profile: Mapping[str, Any],
        sources: Sequence[Source],
        window: int,
        *,
        model: str = "",
        metrics: GaugeSink | None = None,
        min_rows: int | None = None,
        flush_rows: int = FLUSH_ROWS,
        interval_s: float = INTERVAL_S,
        background: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.window = int(window)
        self.min_rows = int(min_rows) if min_rows is not None else min(self.window, MIN_ROWS)
        self.flush_rows = max(1, int(flush_rows))
        self.interval_s = float(interval_s)
        self.log = log or (lambda _m: None)
        feats = profile["features"]
        self.windows = {s.feature: FeatureWindow(s, feats[s.feature], self.window) for s in sources}
        self.inputs = sorted({s.input for s in sources})
        self.enabled = bool(self.windows)
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()  # the pending list
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background and self.enabled:
            self._thread = threading.Thread(target=self._run, name=f"drift-{model}", daemon=True)
            self._thread.start()

    @classmethod
    def from_args(
        cls, args: Any, setting: Any, metrics: GaugeSink | None, inputs: Sequence[Any] | None = None
    ) -> DriftMonitor:
        """The monitor of a plugin model inside Triton (`args`: its ModelArgs; `setting`: the plugin's `drift`,
        None when off; `inputs`: the TensorInfo list to watch, default every input). Never raises: a profile
        that cannot be used logs why and monitors nothing."""
        off = cls({"features": {}}, [], 100, model=getattr(args, "name", ""))
        if setting is None:
            return off
        try:
            path = os.path.join(args.repository, DRIFT_REFERENCE)
            with open(path, encoding="utf-8") as fh:
                profile = json.load(fh)
            batched = args.max_batch_size > 0
            infos = [
                InputInfo(t.name, t.dtype, tuple(t.dims) if batched else tuple(t.dims[1:]))
                for t in (inputs if inputs is not None else args.inputs)
            ]
            sources, problems, _ = match_features(profile["features"], infos)
            if problems:
                raise ValueError("; ".join(problems))
            return cls(
                profile,
                sources,
                setting.window,
                model=args.name,
                metrics=metrics,
                background=True,
                log=log_info,
            )
        except Exception as exc:  # noqa: BLE001 - drift must never stop the model from loading
            log_info(f"{getattr(args, 'name', '?')}: drift monitoring is off: {type(exc).__name__}: {exc}")
            return off

    # -- the request path --
    def observe(self, feed: Mapping[str, np.ndarray]) -> None:
        """Queue this batch's monitored inputs (copies: Triton may reuse its buffers); never raises."""
        if not self.enabled:
            return
        try:
            part = {}
            rows = 0
            for name in self.inputs:
                a = feed.get(name)
                if a is not None and a.ndim > 0:
                    part[name] = np.array(a, copy=True)
                    rows = a.shape[0]
            if not part:
                return
            with self._lock:
                self._pending.append(part)
                self._pending_rows += rows
                due = self._pending_rows >= self.flush_rows or time.monotonic() - self._last_flush >= self.interval_s
            if due:
                if self._thread is not None:
                    self._wake.set()
                else:
                    self.flush()
        except Exception as exc:  # noqa: BLE001 - never fail a request because of drift
            self._disable(exc)

    # -- off the request path (the background thread) --
    def flush(self) -> None:
        """Bin every pending row into the windows, then export the PSI of the features with enough rows;
        never raises (an error turns the monitor off)."""
        try:
            self._flush()
        except Exception as exc:  # noqa: BLE001 - drift must never fail a request
            self._disable(exc)

    def _flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                pending, self._pending, self._pending_rows = self._pending, [], 0
                self._last_flush = time.monotonic()
            if not pending:
                return
            by_input: dict[str, np.ndarray] = {}
            for name in self.inputs:
                parts = [p[name] for p in pending if name in p]
                if parts:
                    arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
                    by_input[name] = arr.reshape(arr.shape[0], -1)
            for w in self.windows.values():
                arr = by_input.get(w.source.input)
                if arr is not None and w.source.column < arr.shape[1]:
                    w.add(arr[:, w.source.column])
            self.export()

    def export(self) -> None:
        if self.metrics is None:
            return
        for name, w in self.windows.items():
            if w.rows >= self.min_rows:
                self.metrics.set(METRIC, METRIC_HELP, w.psi(), feature=name)

    def psi(self) -> dict[str, float]:
        """PSI per feature now (pending rows included); NaN where a feature has no row yet."""
        self.flush()
        return {name: w.psi() for name, w in self.windows.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the thread ends; requests go on
                self._disable(exc)
                return

    def _disable(self, exc: BaseException) -> None:
        if self.enabled:
            self.enabled = False
            self.log(f"{self.model}: drift monitoring is off after an error: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
