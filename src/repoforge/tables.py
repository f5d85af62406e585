"""DATA files as Arrow tables: the one reader of Parquet (a file or a folder of files), CSV and JSON Lines that
`batch` and `drift` share, so both accept the same formats and read a cell the same way.

In CSV and TSV, `nan`, `NaN` and an empty cell in a numeric column are NaN (a missing value, as pandas reads
it): an integer column with such a cell becomes float64. Other cells that spell a null (`NA`, `null`, ...)
stay null in text columns.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa

from repoforge import lazy
from repoforge.errors import RepoforgeError

Kind = Literal["parquet", "csv", "jsonl"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz")
#: Cells that are NaN, not null, in a numeric CSV column (Arrow's float parser reads them as NaN).
_NAN_CELLS = frozenset({"nan", "NaN", "-nan", "-NaN", "NAN"})


class DataError(RepoforgeError):
    """DATA cannot be read as a table (missing, unknown format, files whose schemas differ): a usage error."""

    exit_code = 2


def formats() -> str:
    return (
        f"a Parquet file or folder ({', '.join(PARQUET_SUFFIXES)}), CSV ({', '.join(CSV_SUFFIXES)}) or JSON Lines "
        f"({', '.join(JSONL_SUFFIXES)})"
    )


def detect_kind(path: Path) -> Kind:
    name = path.name.lower()
    if path.is_dir() or name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise DataError(f"cannot tell the format of {path}: expected {formats()}")


def read_text(path: Path, kind: Kind) -> pa.Table:
    """A CSV or JSON Lines file, whole."""
    try:
        if kind == "csv":
            return _read_csv(path)
        pajson = lazy.arrow_json()

        try:
            return pajson.read_json(path)
        except pa.ArrowInvalid as exc:
            if "changed from" not in str(exc):
                raise
            return _read_mixed_jsonl(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path} as {'CSV' if kind == 'csv' else 'JSON Lines'}: {exc}") from None


def _read_csv(path: Path) -> pa.Table:
    pc, pacsv = lazy.arrow_compute(), lazy.arrow_csv()

    parse = pacsv.ParseOptions(delimiter="\t") if path.name.lower().endswith(".tsv") else None
    nulls = [v for v in pacsv.ConvertOptions().null_values if v not in _NAN_CELLS]
    table = pacsv.read_csv(path, parse_options=parse, convert_options=pacsv.ConvertOptions(null_values=nulls))
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if not col.null_count:
            continue
        if pa.types.is_floating(f.type):
            table = table.set_column(i, f.name, pc.fill_null(col, pa.scalar(float("nan"), f.type)))
        elif pa.types.is_integer(f.type):  # an empty cell in a column of numbers: float64 with NaN, as pandas reads it
            as_float = col.cast(pa.float64())
            table = table.set_column(i, f.name, pc.fill_null(as_float, pa.scalar(float("nan"), pa.float64())))
    return table


def _read_mixed_jsonl(path: Path) -> pa.Table:
    """JSON Lines whose rows disagree on a column's type (a poisoned row): the column is kept as JSON text, which
    batch parses row by row, so the good rows are scored and the bad ones get a reason."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows: list[dict[str, object]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON ({exc})") from None
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return pa.table(columns)


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a file or folder (recursively, sorted; `_` and `.` names skipped, as Spark and Arrow do)."""
    if path.is_file():
        return [path]
    return [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file()
        and p.name.lower().endswith(PARQUET_SUFFIXES)
        and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    ]


def read_table(path: Path) -> pa.Table:
    """The whole of DATA as one table (drift profiles and reports read it so); a DataError names what is wrong."""
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    kind = detect_kind(path)
    if kind != "parquet":
        return read_text(path, kind)
    pq = lazy.parquet()

    files = parquet_files(path)
    if not files:
        raise DataError(f"input folder {path} has no Parquet files (*.parquet)")
    try:
        tables = [pq.read_table(f) for f in files]
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None
    try:
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as exc:
        raise DataError(f"the Parquet files of {path} have different schemas: {exc}") from None
