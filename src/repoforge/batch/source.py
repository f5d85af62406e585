"""DATA for a batch run: a Parquet file or folder, CSV or JSON Lines (read by `repoforge.tables`, the reader drift
shares), by position in bounded row ranges.

Ranges are positional (`[start, stop)` of DATA's rows in file order), so both engines and every rerun cut DATA
the same way: a range is the unit that is scored, written as one shard and recorded in the manifest.
Parquet is read by row group (a range reads only the groups it overlaps); CSV and JSON Lines have no random
access, so their file is read once per process and kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from repoforge import lazy
from repoforge.tables import DataError, Kind, detect_kind, parquet_files, read_text

#: Rows decoded from Parquet at a time. Small enough that the first requests go out after a few ms of decoding
#: rather than after a whole 65k-row batch (a 256-wide list column costs ~4 ns a value: ~0.3 s of a core, during
#: which a short job sent nothing); large enough that Arrow's per-batch overhead is nil.
PIECE_ROWS = 8_192


@dataclass(frozen=True)
class RowRange:
    """Rows `[start, stop)` of DATA; `index` names its shard (part-NNNNN.parquet)."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def ranges(num_rows: int, rows_per_range: int) -> list[RowRange]:
    """DATA cut into bounded ranges; the last one may be shorter."""
    if rows_per_range <= 0:
        raise ValueError("rows_per_range must be > 0")
    return [RowRange(i, s, min(s + rows_per_range, num_rows)) for i, s in enumerate(range(0, num_rows, rows_per_range))]


@dataclass
class _ParquetFile:
    path: Path
    offset: int  # first row of this file in DATA
    group_offsets: list[int]  # first row of each row group, relative to the file
    group_rows: list[int]
    size: int = 0  # bytes
    mtime_ns: int = 0
    footer_sha256: str = ""  # the footer: every row group's size, offsets and column statistics


@dataclass
class Source:
    """DATA opened: its schema, row count and a positional reader (no rows are read until asked)."""

    path: Path
    kind: Kind
    schema: pa.Schema
    num_rows: int
    _files: list[_ParquetFile] = field(default_factory=list, repr=False)
    _table: pa.Table | None = field(default=None, repr=False)
    _text_file: dict[str, object] | None = field(default=None, repr=False)  # CSV / JSON Lines: size, sha256

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def fingerprint(self) -> dict[str, object]:
        """What identifies DATA in a manifest, so a resume never scores onto changed data: where it is, its rows
        and schema, and per file its size, mtime and a digest of its content that costs no scan of the rows
        (a Parquet file's footer, which holds every row group's sizes and statistics; a CSV or JSON Lines file's
        bytes, which are read whole anyway)."""
        schema_hash = hashlib.sha256(self.schema.remove_metadata().to_string().encode()).hexdigest()[:16]
        if self.kind == "parquet":
            files: list[dict[str, object]] = [
                {"name": _rel(f.path, self.path), "bytes": f.size, "mtime_ns": f.mtime_ns, "sha256": f.footer_sha256}
                for f in self._files
            ]
        else:
            files = [{"name": self.path.name, **(self._text_file or {})}]
        return {
            "path": str(self.path),
            "kind": self.kind,
            "rows": self.num_rows,
            "schema_sha256": schema_hash,
            "files": files,
        }

    def read(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows `[start, stop)` of DATA (only `columns`, in that order, when given)."""
        cols = list(columns) if columns is not None else None
        if self.kind != "parquet":
            table = self._whole()
            part = table.slice(start, stop - start)
            return part.select(cols) if cols is not None else part
        pq = lazy.parquet()

        pieces: list[pa.Table] = []
        for f in self._files:
            f_stop = f.offset + sum(f.group_rows)
            if f_stop <= start or f.offset >= stop:
                continue
            lo, hi = max(start, f.offset) - f.offset, min(stop, f_stop) - f.offset
            groups = [
                g for g, (o, n) in enumerate(zip(f.group_offsets, f.group_rows, strict=True)) if o < hi and o + n > lo
            ]
            if not groups:
                continue
            table = pq.ParquetFile(f.path).read_row_groups(groups, columns=cols)
            first = f.group_offsets[groups[0]]
            pieces.append(table.slice(lo - first, hi - lo))
        if not pieces:
            return self.schema.empty_table().select(cols) if cols is not None else self.schema.empty_table()
        return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]

    def iter_ranges(
        self, wanted: Sequence[RowRange], columns: Sequence[str] | None = None
    ) -> Iterator[tuple[RowRange, pa.Table]]:
        """`wanted` ranges (in DATA order) read in one sequential pass: a Parquet row group is decoded once however
        many ranges it spans, and groups that no wanted range touches are not read at all."""
        ordered = sorted(wanted, key=lambda r: r.start)
        if self.kind != "parquet":
            for r in ordered:
                yield r, self.read(r.start, r.stop, columns)
            return
        pieces = self._pieces(ordered, list(columns) if columns is not None else None)
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        current: tuple[int, pa.RecordBatch] | None = None
        for r in ordered:
            parts: list[pa.RecordBatch] = []
            while r.rows:
                if current is None:
                    current = next(pieces, None)
                    if current is None:
                        break
                pos, b = current
                end = pos + b.num_rows
                if end <= r.start:
                    current = None
                    continue
                lo, hi = max(r.start, pos), min(r.stop, end)
                if hi > lo:
                    parts.append(b.slice(lo - pos, hi - lo))
                if end <= r.stop:
                    current = None
                if end >= r.stop:
                    break
            yield r, pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()

    def _pieces(self, ordered: Sequence[RowRange], cols: list[str] | None) -> Iterator[tuple[int, pa.RecordBatch]]:
        pq = lazy.parquet()

        for f in self._files:
            groups = [g for g, (o, n) in enumerate(zip(f.group_offsets, f.group_rows, strict=True))
                      if any(r.start < f.offset + o + n and r.stop > f.offset + o for r in ordered)]  # fmt: skip
            if not groups:
                continue
            pf = pq.ParquetFile(f.path)
            for g in groups:
                pos = f.offset + f.group_offsets[g]
                for b in pf.iter_batches(batch_size=PIECE_ROWS, row_groups=[g], columns=cols, use_threads=False):
                    yield pos, b
                    pos += b.num_rows

    def read_groups(self, wanted: Sequence[RowRange]) -> list[list[RowRange]]:
        """`wanted` cut into runs of consecutive ranges that share a Parquet row group, so a reader per run decodes
        each group once (the Ray engine makes a read task of each run)."""
        ordered = sorted(wanted, key=lambda r: r.start)
        if self.kind != "parquet":
            return [[r] for r in ordered]

        def keys(r: RowRange) -> set[tuple[int, int]]:
            return {(i, g) for i, f in enumerate(self._files)
                    for g, (o, n) in enumerate(zip(f.group_offsets, f.group_rows, strict=True))
                    if r.start < f.offset + o + n and r.stop > f.offset + o}  # fmt: skip

        runs: list[list[RowRange]] = []
        last: set[tuple[int, int]] = set()
        for r in ordered:
            k = keys(r)
            if runs and runs[-1][-1].stop == r.start and k & last:
                runs[-1].append(r)
            else:
                runs.append([r])
            last = k
        return runs

    def _whole(self) -> pa.Table:
        if self._table is None:
            self._table = read_text(self.path, self.kind)
        return self._table


def open_source(path: str | Path) -> Source:
    """DATA opened for reading: a DataError (exit 2) naming the file when it is missing or unreadable."""
    p = Path(path).absolute()
    if not p.exists():
        raise DataError(f"input {path} does not exist")
    kind = detect_kind(p)
    if kind != "parquet":
        table = read_text(p, kind)
        st = p.stat()
        ident = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _file_sha256(p)}
        return Source(p, kind, table.schema, table.num_rows, _table=table, _text_file=ident)
    pq = lazy.parquet()

    files = parquet_files(p)
    if not files:
        raise DataError(f"input folder {path} has no Parquet files (*.parquet)")
    opened: list[_ParquetFile] = []
    schema: pa.Schema | None = None
    offset = 0
    for f in files:
        try:
            meta = pq.read_metadata(f)
            file_schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read {f} as Parquet: {exc}") from None
        if schema is None:
            schema = file_schema
        elif not file_schema.remove_metadata().equals(schema.remove_metadata()):
            raise DataError(
                f"{f} has another schema than {files[0]}: {file_schema.remove_metadata()} vs {schema.remove_metadata()}"
            )
        rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        starts = [0, *itertools.accumulate(rows)][: len(rows)]
        st = f.stat()
        opened.append(_ParquetFile(f, offset, starts, rows, st.st_size, st.st_mtime_ns, _footer_sha256(f)))
        offset += sum(rows)
    assert schema is not None
    return Source(p, "parquet", schema, offset, _files=opened)


def _rel(path: Path, root: Path) -> str:
    return path.name if path == root else path.relative_to(root).as_posix()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _footer_sha256(path: Path) -> str:
    """sha256 of a Parquet file's footer (its FileMetaData: row groups, their byte sizes, offsets and column
    statistics), read from the file's end without decoding any rows."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        tail = fh.read(8)
        length = int.from_bytes(tail[:4], "little")
        fh.seek(-8 - length, os.SEEK_END)
        return hashlib.sha256(fh.read(length)).hexdigest()


def _when(ns: object) -> str:
    if not isinstance(ns, int):
        return "?"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_change(before: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """How DATA differs from what an earlier run recorded, in words (empty when it does not)."""
    said: list[str] = []
    if before.get("path") != now.get("path"):
        return [f"DATA was {before.get('path')}, now {now.get('path')}"]
    if before.get("rows") != now.get("rows"):
        said.append(f"it had {_count(before.get('rows'))} rows, it has {_count(now.get('rows'))} rows now")
    if before.get("schema_sha256") != now.get("schema_sha256") or before.get("kind") != now.get("kind"):
        said.append("its columns or their types changed")
    old_files = {str(f.get("name")): f for f in _files(before)}
    new_files = {str(f.get("name")): f for f in _files(now)}
    if "files" not in before:
        said.append("the earlier run recorded no fingerprint of its content (an older repoforge)")
    else:
        gone = sorted(set(old_files) - set(new_files))
        added = sorted(set(new_files) - set(old_files))
        if gone:
            said.append(f"{', '.join(gone[:3])}{' ...' if len(gone) > 3 else ''} no longer there")
        if added:
            said.append(f"{', '.join(added[:3])}{' ...' if len(added) > 3 else ''} added")
        for name in sorted(set(old_files) & set(new_files)):
            a, b = old_files[name], new_files[name]
            what = []
            if a.get("sha256") != b.get("sha256"):
                what.append("its content changed")
            if a.get("bytes") != b.get("bytes"):
                what.append(f"{_count(a.get('bytes'))} bytes then, {_count(b.get('bytes'))} now")
            if a.get("mtime_ns") != b.get("mtime_ns"):
                what.append(f"modified {_when(b.get('mtime_ns'))} (was {_when(a.get('mtime_ns'))})")
            if what:
                said.append(f"{name} changed: {', '.join(what)}")
    return said or ["its fingerprint changed"]


def _count(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _files(fp: Mapping[str, object]) -> list[Mapping[str, object]]:
    files = fp.get("files")
    return [f for f in files if isinstance(f, Mapping)] if isinstance(files, list) else []


__all__ = [
    "DataError",
    "RowRange",
    "Source",
    "describe_change",
    "detect_kind",
    "open_source",
    "parquet_files",
    "ranges",
]
