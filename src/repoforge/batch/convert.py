"""Arrow columns to the model's input arrays and its output arrays back to Arrow, row by row accountable.

A row that cannot become an input (null, wrong length, a value that is not of the input's dtype) is not an
exception for the whole batch: it is set aside with its reason (it goes to _errors.parquet) and the other rows
are scored. The fast path casts whole columns; only a column that fails it is walked row by row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repoforge.batch.model import Binding, TensorSpec

POS = "__pos"  # a row's position in DATA, carried through both engines
ERROR = "__error"  # why a row was not scored (null when it was)

_ARROW: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BYTES": pa.binary(),
}


def arrow_scalar(datatype: str) -> pa.DataType:
    try:
        return _ARROW[datatype]
    except KeyError:
        raise ValueError(f"Triton dtype {datatype} has no Arrow column type here") from None


def arrow_type(spec: TensorSpec) -> pa.DataType:
    """An output's column type: its dtype, nested in a fixed-size list per fixed dim (a list per variable one)."""
    t = arrow_scalar(spec.datatype)
    for d in reversed(spec.dims):
        t = pa.list_(t, d) if d > 0 else pa.list_(t)
    return t


@dataclass
class Prepared:
    """One chunk of rows made into input arrays: `ok` marks the rows the arrays hold (in order), `reasons` the rest."""

    arrays: dict[str, np.ndarray]
    ok: np.ndarray  # bool, one per row of the chunk
    reasons: dict[int, str]


def _cast_target(spec: TensorSpec) -> pa.DataType:
    # pyarrow cannot cast to float16; numpy does it after a float32 cast
    return pa.float32() if spec.datatype == "FP16" else arrow_scalar(spec.datatype)


def _row_values(value: Any, spec: TensorSpec, column: str) -> np.ndarray:
    """One row's value as the input's array, or ValueError saying why not (the slow, exact path)."""
    if value is None:
        raise ValueError(f"column {column!r} is null")
    if isinstance(value, str) and spec.datatype != "BYTES":
        value = _parse_text(value, spec, column)  # a CSV cell or a mixed JSON column holds numbers as text
    if spec.datatype == "BYTES":
        items = value if isinstance(value, list) else [value]
        if any(v is None for v in items):
            raise ValueError(f"column {column!r} holds a null value")
        arr = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in items], dtype=object)
    else:
        if isinstance(value, (str, bytes)) or (
            isinstance(value, list) and any(isinstance(v, (str, bytes)) for v in value)
        ):
            raise ValueError(f"column {column!r} holds {value!r}, not {spec.datatype} numbers")
        if isinstance(value, list) and any(v is None for v in value):
            raise ValueError(f"column {column!r} holds a null value")
        try:
            arr = np.asarray(value, dtype=spec.np_dtype)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"column {column!r} holds {value!r}, not {spec.datatype}") from None
    if arr.size != spec.size:
        raise ValueError(
            f"column {column!r} has {arr.size} values, input {spec.name!r} takes {spec.size} {list(spec.dims)}"
        )
    return arr.reshape(spec.dims)


def _parse_text(text: str, spec: TensorSpec, column: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"column {column!r} holds {text!r}, not {spec.datatype} numbers") from None
    if value is None or isinstance(value, (int, float, list)):
        return value
    raise ValueError(f"column {column!r} holds {text!r}, not {spec.datatype} numbers")


def _slow(arr: pa.Array, spec: TensorSpec, column: str, n: int) -> tuple[np.ndarray, dict[int, str]]:
    out = (
        np.zeros((n, *spec.dims), dtype=spec.np_dtype)
        if spec.datatype != "BYTES"
        else np.empty((n, *spec.dims), dtype=object)
    )
    reasons: dict[int, str] = {}
    for i, value in enumerate(arr.to_pylist()):
        try:
            out[i] = _row_values(value, spec, column)
        except ValueError as exc:
            reasons[i] = str(exc)
    return out, reasons


def _to_numpy(values: pa.Array, spec: TensorSpec) -> np.ndarray:
    if spec.datatype == "BYTES":
        return np.array([v.encode() if isinstance(v, str) else v for v in values.to_pylist()], dtype=object)
    out = values.cast(_cast_target(spec)).to_numpy(zero_copy_only=False)
    return out.astype(spec.np_dtype, copy=False)


def _one_column(col: pa.ChunkedArray | pa.Array, spec: TensorSpec, column: str) -> tuple[np.ndarray, dict[int, str]]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    is_list = pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)
    try:
        if not is_list:
            if arr.null_count or (
                spec.datatype != "BYTES" and (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type))
            ):
                return _slow(arr, spec, column, n)
            return _to_numpy(arr, spec).reshape(n, *spec.dims), {}
        lengths = pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(arr)
        if arr.null_count or flat.null_count or not np.all(lengths == spec.size):
            return _slow(arr, spec, column, n)
        if spec.datatype != "BYTES" and (pa.types.is_string(flat.type) or pa.types.is_binary(flat.type)):
            return _slow(arr, spec, column, n)
        return _to_numpy(flat, spec).reshape(n, *spec.dims), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return _slow(arr, spec, column, n)


def prepare(table: pa.Table, bindings: Sequence[Binding]) -> Prepared:
    """The chunk's input arrays (the rows that make valid inputs) and a reason for each row that does not."""
    n = table.num_rows
    reasons: dict[int, str] = {}
    full: dict[str, np.ndarray] = {}
    for b in bindings:
        if len(b.columns) == 1:
            values, why = _one_column(table.column(b.columns[0]), b.input, b.columns[0])
        else:
            scalar = TensorSpec(b.input.name, b.input.datatype, ())
            parts = []
            why = {}
            for c in b.columns:
                v, w = _one_column(table.column(c), scalar, c)
                parts.append(v)
                why.update({i: r for i, r in w.items() if i not in why})
            values = np.stack(parts, axis=-1).reshape(n, *b.input.dims) if parts else np.empty((n, *b.input.dims))
        for i, r in why.items():
            reasons.setdefault(i, f"input {b.input.name!r}: {r}")
        full[b.input.name] = values
    ok = np.ones(n, dtype=bool)
    if reasons:
        ok[list(reasons)] = False
    arrays = {k: (v if not reasons else v[ok]) for k, v in full.items()}
    return Prepared(arrays, ok, reasons)


def to_arrow(values: np.ndarray | None, spec: TensorSpec, ok: np.ndarray) -> pa.Array:
    """An output for every row of a chunk (null where `ok` is False) as `arrow_type(spec)`; `values` holds the ok
    rows only, batch axis first."""
    n = len(ok)
    typ = arrow_type(spec)
    if values is None or not ok.any():
        return pa.nulls(n, typ)
    row_shape = values.shape[1:]
    if spec.datatype == "BYTES":
        full = np.empty((n, *row_shape), dtype=object)
        full[...] = b""
    else:
        full = np.zeros((n, *row_shape), dtype=values.dtype)
    full[ok] = values
    mask = None if ok.all() else pa.array(~ok)
    flat_values = full.reshape(-1)
    base = pa.array(list(flat_values) if spec.datatype == "BYTES" else flat_values, type=arrow_scalar(spec.datatype))
    if not row_shape:
        return pc.if_else(pa.array(ok), base, pa.nulls(n, base.type)) if mask is not None else base
    arr: pa.Array = base
    for i, d in enumerate(reversed(row_shape)):
        outer = i == len(row_shape) - 1
        arr = pa.FixedSizeListArray.from_arrays(arr, d, mask=mask if outer else None)
    return arr if arr.type == typ else arr.cast(typ)


def chunk_table(
    positions: np.ndarray,
    ids: pa.Array | pa.ChunkedArray,
    id_name: str,
    outputs: dict[str, np.ndarray] | None,
    specs: Sequence[TensorSpec],
    ok: np.ndarray,
    reasons: dict[int, str],
) -> pa.Table:
    """One scored chunk as both engines hand it to the writer: position, id, every output, and the error column."""
    cols: dict[str, Any] = {POS: pa.array(positions, type=pa.int64()), id_name: ids}
    for spec in specs:
        cols[spec.name] = to_arrow(None if outputs is None else outputs.get(spec.name), spec, ok)
    errors = [None if ok[i] else reasons.get(i, "not scored") for i in range(len(ok))]
    cols[ERROR] = pa.array(errors, type=pa.string())
    return pa.table(cols)
