"""Compile a declarative features config into a `FeaturePipeline`: raw columns in, one FP32 matrix out.

Every transform works on whole columns with numpy (one call per op per batch, no per-row Python),
and the output width is known from the config alone (`FeaturePipeline.output_dim`), so a serving
plan can declare the output tensor before any data is seen.

    pipe = FeaturePipeline.from_config({"kind": "features", "columns": [...], "features": [...]})
    x = pipe.transform({"age": np.array([31.0, np.nan]), "city": np.array([b"paris", b""], dtype=object)})

This module imports neither Triton nor TorchServe: handlers of either server use it as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CYCLES, Column, FeaturesConfig, PluginConfigError, all_columns, as_data, check_features, op_width
from .hashing import PY_LOOP_MAX_ROWS, as_bytes, combine, stable_hash, utf8_length
from .online import OnlineLookup

__all__ = ["FeatureConfigError", "FeaturePipeline", "Prepared", "datetime_parts", "one_hot"]


class FeatureConfigError(PluginConfigError):
    """The config is inconsistent (e.g. an op names a column that does not exist)."""


@dataclass
class Prepared:
    """One column ready for the ops: values (rows × width, or rows for text) and where values were missing."""

    values: np.ndarray
    missing: np.ndarray
    column: Column


def one_hot(index: np.ndarray, n: int) -> np.ndarray:
    """rows × n float32 with a 1 at each row's index; rows whose index is outside [0, n) stay all zeros."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    out = np.zeros((len(index), n), dtype=np.float32)
    ok = (index >= 0) & (index < n)
    out[np.nonzero(ok)[0], index[ok]] = 1.0
    return out


def datetime_parts(seconds: np.ndarray, parts: list[str], cyclical: bool = False) -> np.ndarray:
    """UTC calendar parts of unix timestamps (seconds), rows × parts (× 2 for cyclical sin/cos parts).

    weekday: Monday = 0 … Sunday = 6; day, month, dayofyear start at 1.
    """
    s = np.asarray(seconds).reshape(-1)
    if s.dtype.kind == "f":
        s = np.floor(np.nan_to_num(s, nan=0.0)).astype(np.int64)
    else:
        s = s.astype(np.int64)
    days = s // 86400

    def d() -> np.ndarray:
        return days.astype("datetime64[D]")

    def m_int() -> np.ndarray:
        return d().astype("datetime64[M]").astype(np.int64)

    # only the parts asked for are computed: the calendar conversions cost more than the rest of a 1-row request
    values = {
        "hour": lambda: (s // 3600) % 24,
        "minute": lambda: (s // 60) % 60,
        "weekday": lambda: (days + 3) % 7,  # 1970-01-01 was a Thursday
        "day": lambda: (d() - d().astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1,
        "month": lambda: m_int() % 12 + 1,
        "year": lambda: m_int() // 12 + 1970,
        "dayofyear": lambda: (d() - d().astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1,
        "is_weekend": lambda: (((days + 3) % 7) >= 5).astype(np.int64),
    }
    cols: list[np.ndarray] = []
    for p in parts:
        v = values[p]().astype(np.float64)
        if cyclical and p in CYCLES:
            period, offset = CYCLES[p]
            angle = 2.0 * np.pi * (v - offset) / period
            cols += [np.sin(angle), np.cos(angle)]
        else:
            cols.append(v)
    return np.stack(cols, axis=1).astype(np.float32)


def _numeric(values: np.ndarray, rows: int, col: Column) -> Prepared:
    x = np.asarray(values)
    if x.dtype.kind in "OSU":  # e.g. JSON strings from a REST client
        x = x.astype(np.float64)
    x = x.reshape(rows, col.width)
    missing = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, dtype=bool)
    if col.fill is not None and missing.any():
        x = np.where(missing, np.asarray(col.fill, dtype=x.dtype), x)
    return Prepared(x, missing, col)


def _text(values: np.ndarray, rows: int, col: Column) -> Prepared:
    b = as_bytes(values)
    if len(b) != rows:
        raise ValueError(f"column '{col.name}' has {len(b)} values for {rows} rows (text columns have width 1)")
    missing = np.char.str_len(b) == 0 if len(b) else np.zeros(0, dtype=bool)
    if col.fill is not None and missing.any():
        b = np.where(missing, np.array(str(col.fill).encode("utf-8")), b)
    return Prepared(b, missing, col)


def _features_config(config: Any) -> FeaturesConfig:
    if isinstance(config, FeaturesConfig):
        return config
    data = as_data(config)
    if data.get("kind", "features") != "features":
        raise FeatureConfigError(f"expected a features config, got kind {data.get('kind')}")
    try:
        return FeaturesConfig.parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatureConfigError(f"features config: {type(exc).__name__}: {exc}") from exc


class FeaturePipeline:
    """A compiled features config. `transform` maps a dict of raw columns to rows × `output_dim` float32."""

    def __init__(self, config: Any, lookup: Any = None) -> None:
        config = _features_config(config)
        problems = check_features(config)
        if problems:
            raise FeatureConfigError("; ".join(f"plugin.{'.'.join(map(str, p))}: {m}" for p, m in problems))
        self.config = config
        self.columns = {c.name: c for c in config.columns}
        self._all = all_columns(config)
        self.widths = [op_width(op, self._all) for op in config.features]
        self.output_dim = sum(self.widths)
        self.output_name = config.output
        self._lookup = lookup
        # op name -> (method, whether it yields bucket indices); resolved once here, not per request
        self._ops: dict[str, tuple[Any, bool]] = {
            "cross": (self._cross, True),
            "is_missing": (self._is_missing, False),
            "identity": (self._identity, False),
            "standardize": (self._standardize, False),
            "min_max": (self._min_max, False),
            "log1p": (self._log1p, False),
            "clip": (self._clip, False),
            "bucketize": (self._bucketize, True),
            "vocabulary": (self._vocabulary, True),
            "hash": (self._hash, True),
            "datetime": (self._datetime, False),
            "length": (self._length, False),
        }
        unknown = [op.op for op in config.features if op.op not in self._ops]
        if unknown:
            raise FeatureConfigError(f"unknown op {unknown[0]}")
        self._steps: list[tuple[int, Any, int, int, Any, bool]] = []
        at = 0
        for j, (op, width) in enumerate(zip(config.features, self.widths, strict=True)):
            self._steps.append((j, op, at, width, *self._ops[op.op]))
            at += width
        self._vocab: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for j, op in enumerate(config.features):
            if op.op == "vocabulary":
                texts = as_bytes(np.array([str(v).encode("utf-8") for v in op.values], dtype=object))
                order = np.argsort(texts, kind="stable")
                self._vocab[j] = (texts[order], order.astype(np.int64))

    @classmethod
    def from_config(cls, config: Any, lookup: Any = None) -> FeaturePipeline:
        """From a `FeaturesConfig`, its JSON or dict, or the spec's pydantic model."""
        return cls(config, lookup)

    @property
    def lookup(self) -> Any:
        """The online lookup (created from `config.lookup` on first use; None without one)."""
        if self._lookup is None and self.config.lookup is not None:
            self._lookup = OnlineLookup(self.config.lookup)
        return self._lookup

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.config.columns]

    def prepare(self, columns: Mapping[str, np.ndarray]) -> dict[str, Prepared]:
        """Raw columns (reshaped, missing values filled) plus the looked-up ones."""
        missing = [n for n in self.columns if n not in columns]
        if missing:
            raise KeyError(f"missing input column(s): {', '.join(missing)}")
        first = self.config.columns[0]
        rows = int(np.asarray(columns[first.name]).size // first.width)
        out: dict[str, Prepared] = {}
        for name, col in self.columns.items():
            out[name] = (_text if col.is_text else _numeric)(columns[name], rows, col)
        lk = self.config.lookup
        if lk is not None:
            values, found = self.lookup.fetch(out[lk.key].values)
            for k, f in enumerate(lk.fields):
                v = values[:, k : k + 1]
                out[f.name] = Prepared(v, np.zeros(v.shape, dtype=bool), self._all[f.name])
            if lk.found:
                out[lk.found] = Prepared(
                    found.astype(np.float32).reshape(-1, 1), np.zeros((rows, 1), bool), self._all[lk.found]
                )
        return out

    def transform(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        prepared = self.prepare(columns)
        rows = len(next(iter(prepared.values())).values)
        out = np.zeros((rows, self.output_dim), dtype=np.float32)
        for j, op, at, width, fn, indexed in self._steps:
            if indexed:  # an index op: its one-hot ones go straight into the output (zeros already)
                idx = np.asarray(fn(j, op, prepared, rows), dtype=np.int64).reshape(-1)
                if op.output == "one_hot" and rows <= PY_LOOP_MAX_ROWS:  # a few rows: cheaper than 4 numpy calls
                    for r, i in enumerate(idx.tolist()):
                        if 0 <= i < width:
                            out[r, at + i] = 1.0
                elif op.output == "one_hot":
                    ok = (idx >= 0) & (idx < width)
                    out[np.nonzero(ok)[0], at + idx[ok]] = 1.0
                else:
                    out[:, at] = idx
            else:
                out[:, at : at + width] = fn(j, op, prepared, rows)
        return out

    __call__ = transform

    def _apply(self, j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        """One op's rows × width float32 block (what `transform` writes for it)."""
        fn, indexed = self._ops[op.op]
        if not indexed:
            return np.asarray(fn(j, op, cols, rows))
        return self._index(fn(j, op, cols, rows), op_width(op, self._all) if op.output == "one_hot" else 0, op.output)

    # -- the ops: value ops return rows × width, index ops the rows' bucket (-1: none) --
    def _cross(self, j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        idx: np.ndarray = combine([stable_hash(cols[c].values) for c in op.columns]) % np.uint64(op.buckets)
        return idx.astype(np.int64)

    @staticmethod
    def _is_missing(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        p = cols[op.column]
        return p.missing.reshape(rows, p.column.width).astype(np.float32)

    @staticmethod
    def _identity(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return cols[op.column].values.astype(np.float32)

    @staticmethod
    def _standardize(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        x = cols[op.column].values
        return ((x - np.asarray(op.mean, dtype=np.float64)) / np.asarray(op.std, dtype=np.float64)).astype(np.float32)

    @staticmethod
    def _min_max(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        y = (cols[op.column].values - op.min) / (op.max - op.min)
        return (np.clip(y, 0.0, 1.0) if op.clip else y).astype(np.float32)

    @staticmethod
    def _log1p(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return np.log1p(np.maximum(cols[op.column].values.astype(np.float64), 0.0)).astype(np.float32)

    @staticmethod
    def _clip(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return np.clip(cols[op.column].values, op.min, op.max).astype(np.float32)

    @staticmethod
    def _bucketize(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        x = cols[op.column].values
        return np.searchsorted(
            np.asarray(op.boundaries, dtype=np.float64), x.reshape(-1).astype(np.float64), side="right"
        )

    def _vocabulary(self, j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        sorted_vocab, order = self._vocab[j]
        text = as_bytes(cols[op.column].values)
        pos = np.searchsorted(sorted_vocab, text)
        pos_c = np.minimum(pos, len(sorted_vocab) - 1)
        hit = sorted_vocab[pos_c] == text
        idx = np.where(hit, order[pos_c], -1)
        if op.oov_buckets:
            oov = len(op.values) + (stable_hash(text) % np.uint64(op.oov_buckets)).astype(np.int64)
            idx = np.where(hit, idx, oov)
        return idx

    @staticmethod
    def _hash(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return (stable_hash(cols[op.column].values) % np.uint64(op.buckets)).astype(np.int64)

    @staticmethod
    def _datetime(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return datetime_parts(cols[op.column].values, list(op.parts), op.cyclical)

    @staticmethod
    def _length(j: int, op: Any, cols: dict[str, Prepared], rows: int) -> np.ndarray:
        return utf8_length(cols[op.column].values).astype(np.float32).reshape(rows, 1)

    @staticmethod
    def _index(idx: np.ndarray, n: int, output: str) -> np.ndarray:
        if output == "one_hot":
            return one_hot(idx, n)
        return np.asarray(idx, dtype=np.float32).reshape(-1, 1)
