"""DATA for drift as named feature columns: numeric (float64, NaN = missing) or categorical (str, None = missing).

Parquet (a file or folder), CSV and JSON Lines are read by `repoforge.tables`, as batch reads them; a `.npz` holds arrays by input name, and a 2-D array `[rows, k]`
becomes the features `NAME[0]` .. `NAME[k-1]` (the way a tensor input's columns are named everywhere).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from repoforge.errors import RepoforgeError, relpath_for_messages
from repoforge.tables import DataError, formats, read_table

Kind = Literal["numeric", "categorical"]
NPZ_SUFFIXES = (".npz",)


class DriftError(RepoforgeError):
    """Bad drift input (unreadable file, unknown format, a feature missing): a usage error, nothing written."""

    exit_code = 2


@dataclass
class Features:
    """The columns read from one DATA file, plus the columns that could not be profiled and why."""

    path: Path
    columns: dict[str, tuple[Kind, np.ndarray]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rows: int = 0


def read_features(path: Path) -> Features:
    """Read DATA; any failure is a DriftError that names the file. Tables come through `repoforge.tables`, the
    reader batch uses too (Parquet file or folder, CSV, JSON Lines), so both commands take the same files."""
    shown = relpath_for_messages(path)
    if not path.exists():
        raise DriftError(f"{shown}: no such file")
    name = path.name.lower()
    try:
        if path.is_file() and name.endswith(NPZ_SUFFIXES):
            return _read_npz(path)
        return _from_table(path, read_table(path))
    except DriftError:
        raise
    except DataError as exc:
        if "cannot tell the format" in str(exc):
            raise DriftError(f"{shown}: unknown format; expected {formats()} or {', '.join(NPZ_SUFFIXES)}") from None
        raise DriftError(f"{shown}: {exc}") from None
    except (OSError, ValueError, pa.ArrowException, zipfile.BadZipFile) as exc:
        raise DriftError(f"{shown}: cannot read it: {exc}") from None


def _from_table(path: Path, table: pa.Table) -> Features:
    out = Features(path=path, rows=table.num_rows)
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            out.columns[name] = ("numeric", _float64(col))
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            out.columns[name] = ("categorical", _strings(col.cast(pa.string()).to_pylist()))
        elif pa.types.is_fixed_size_list(t) and (
            pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
        ):
            flat = _float64(col.combine_chunks().flatten()).reshape(len(col), t.list_size)
            for i in range(t.list_size):
                out.columns[f"{name}[{i}]"] = ("numeric", flat[:, i].copy())
        else:
            out.skipped[name] = f"type {t} is neither numeric nor string"
    return out


def _float64(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Nulls become NaN (counted as missing)."""
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(values: list[str | None]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _read_npz(path: Path) -> Features:
    out = Features(path=path)
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            a = npz[name]
            out.rows = max(out.rows, a.shape[0] if a.ndim else 0)
            if a.dtype.kind in "US":
                if a.ndim != 1:
                    out.skipped[name] = f"a string array must be 1-D, got shape {list(a.shape)}"
                    continue
                out.columns[name] = ("categorical", _strings([str(v) for v in a.astype(str)]))
            elif a.dtype.kind == "b" and a.ndim == 1:
                out.columns[name] = ("categorical", _strings(["true" if v else "false" for v in a]))
            elif a.dtype.kind in "iuf":
                if a.ndim == 1:
                    out.columns[name] = ("numeric", a.astype(np.float64))
                elif a.ndim == 2:
                    for i in range(a.shape[1]):
                        out.columns[f"{name}[{i}]"] = ("numeric", a[:, i].astype(np.float64))
                else:
                    out.skipped[name] = f"shape {list(a.shape)}: only [rows] and [rows, k] arrays are profiled"
            else:
                out.skipped[name] = f"dtype {a.dtype} is neither numeric nor string"
    return out
