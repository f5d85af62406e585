"""OUT: Parquet shards, the manifest that says which ranges are done, and the rows that could not be scored.

Order of writes for a finished range (what makes a kill -9 at any moment safe):
1. `part-NNNNN.parquet` written under a temp name, fsynced, renamed;
2. its error rows, if any, to `_errors/part-NNNNN.parquet` the same way;
3. `_manifest.json` rewritten (temp + fsync + rename) with the range marked done.
A range is done only once step 3 happened; on resume every shard or error file of a range that is not done
(left by a kill between 1 and 3) and every temp file is deleted, and the range is scored again. `_errors.parquet`
is the union of the done ranges' error files, rewritten at the end of each run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repoforge.batch.convert import ERROR, POS
from repoforge.batch.model import BatchArgumentError
from repoforge.batch.source import RowRange, describe_change

FORMAT = "repoforge-batch/1"
MANIFEST = "_manifest.json"
ERRORS = "_errors.parquet"
ERRORS_DIR = "_errors"
RAY_LOG = "_ray.log"  # the Ray engine's log of Ray's own output
_SHARD = re.compile(r"^part-(\d{5,})\.parquet$")
_TEMP = ".tmp-"


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclass
class RangeDone:
    start: int
    stop: int
    rows: int  # rows written to the shard (scored)
    errors: int
    file: str
    engine: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Manifest:
    """`_manifest.json`: the run's identity (model version and config hash, DATA and settings) and the done ranges."""

    model: dict[str, Any]
    settings: dict[str, Any]
    ranges_total: int
    done: dict[int, RangeDone] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "settings": self.settings,
            "settings_sha256": settings_hash(self.settings),
            "ranges_total": self.ranges_total,
            "ranges_done": len(self.done),
            "rows_scored": sum(d.rows for d in self.done.values()),
            "rows_errored": sum(d.errors for d in self.done.values()),
            "done": {str(k): v.to_dict() for k, v in sorted(self.done.items())},
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        done = {int(k): RangeDone(**v) for k, v in data.get("done", {}).items()}
        return cls(data["model"], data["settings"], int(data["ranges_total"]), done)


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}{_TEMP}{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f"{path.name}{_TEMP}{os.getpid()}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(out: Path) -> Manifest | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise BatchArgumentError("--output", f"{path} is not a repoforge batch manifest ({exc})") from None


def check_folder(out: Path) -> None:
    """OUT before anything is known about the model: a folder that is new, empty, or a batch output."""
    if out.exists() and not out.is_dir():
        raise BatchArgumentError("--output", f"{out} is a file; give a folder for the shards")
    if not out.is_dir():
        return
    if read_manifest(out) is None:
        foreign = [p.name for p in out.iterdir() if not _is_ours(p.name)]
        if foreign:
            raise BatchArgumentError(
                "--output",
                f"{out} is not empty and holds no batch manifest ({', '.join(sorted(foreign)[:5])}); "
                "give an empty or new folder",
            )


def check_resume(out: Path, model: dict[str, Any], settings: dict[str, Any], *, restart: bool) -> Manifest | None:
    """The manifest of a run to resume in `out`, or None for a fresh one. Refuses (before anything is written or
    sent) another run's output, or this run's output scored with another model version or config; `restart`
    makes both a fresh start (only batch files are ever deleted)."""
    check_folder(out)
    existing = read_manifest(out) if out.is_dir() else None
    if restart or existing is None:
        return None
    if existing.settings != settings:
        before, now = existing.settings.get("input", {}), settings.get("input", {})
        others = _setting_changes(existing.settings, settings)
        if before != now and before.get("path") == now.get("path") and not others:
            raise BatchArgumentError(
                "--output",
                f"{out} holds scores of {now.get('path')} as it was when that run began, and it changed since: "
                f"{'; '.join(describe_change(before, now))}. Rerun with --restart to score all of it again "
                "(or give another --output)",
            )
        if before != now:
            others = [*describe_change(before, now)[:1], *others]
        raise BatchArgumentError(
            "--output",
            f"{out} holds another run's output ({'; '.join(others[:3])}); give another --output, or --restart to "
            "discard it",
        )
    if (
        existing.model.get("version") != model["version"]
        or existing.model.get("config_sha256") != model["config_sha256"]
    ):
        raise BatchArgumentError(
            "--output",
            f"{out} was scored with model '{existing.model.get('name')}' version {existing.model.get('version')} "
            f"(config {str(existing.model.get('config_sha256'))[:12]}), the server now serves version {model['version']} "
            f"(config {model['config_sha256'][:12]}); --restart to score everything again with it, or "
            "--model-version to pin the old one",
        )
    return existing


_FLAGS = {"model": "the model", "map": "--map", "id_column": "--id-column", "rows_per_shard": "--rows-per-shard",
          "outputs": "the model's outputs"}  # fmt: skip


def _said(key: str, value: Any) -> str:
    if value is None:
        return "none"
    if key == "map" and isinstance(value, dict):
        return " ".join(f"{','.join(cols)}={inp}" for inp, cols in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _setting_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Every setting but DATA that differs between a recorded run and this one, in words."""
    keys = sorted(k for k in set(before) | set(now) if k != "input" and before.get(k) != now.get(k))
    out = []
    for k in keys:
        out.append(f"{_FLAGS.get(k, k)} {_said(k, before.get(k))} there, {_said(k, now.get(k))} now")
    return out


def _is_ours(name: str) -> bool:
    return bool(_SHARD.match(name)) or name in (MANIFEST, ERRORS, ERRORS_DIR, RAY_LOG) or _TEMP in name


class Store:
    """The writer of OUT for one run: cleans what a killed run left, writes ranges, keeps the manifest."""

    def __init__(
        self, out: Path, manifest: Manifest, id_name: str, *, fresh: bool, id_type: pa.DataType | None = None
    ) -> None:
        self.out = out
        self.id_type = id_type or pa.int64()
        self.manifest = manifest
        self.id_name = id_name
        self._fresh = fresh

    def open(self) -> None:
        """Create OUT (or clean it for a restart/resume) and write the manifest of the run."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / ERRORS_DIR).mkdir(exist_ok=True)
        for index, d in list(self.manifest.done.items()):  # a shard deleted by hand is scored again
            if not (self.out / d.file).exists() or (d.errors and not (self.out / ERRORS_DIR / d.file).exists()):
                del self.manifest.done[index]
        done_files = {d.file for d in self.manifest.done.values()}
        for p in list(self.out.iterdir()) + list((self.out / ERRORS_DIR).iterdir()):
            if _TEMP in p.name or (_SHARD.match(p.name) and (self._fresh or p.name not in done_files)):
                p.unlink()
        if self._fresh:
            with contextlib.suppress(FileNotFoundError):
                (self.out / ERRORS).unlink()
        self._save()

    def _save(self) -> None:
        _fsync_write(self.out / MANIFEST, (json.dumps(self.manifest.to_dict(), indent=1) + "\n").encode())

    def write_range(self, r: RowRange, chunks: Iterable[pa.Table], engine: str, seconds: float) -> RangeDone:
        """All chunks of range `r` (every row of it once): the shard, its errors, then the manifest entry."""
        table = pa.concat_tables(list(chunks))
        if table.num_rows != r.rows:
            raise RuntimeError(f"range {r.index} has {table.num_rows} rows scored, expected {r.rows}")
        table = table.sort_by(POS)
        failed = pc.is_valid(table.column(ERROR))
        good = table.filter(pc.invert(failed))
        bad = table.filter(failed)
        name = shard_name(r.index)
        _write_parquet(good.drop_columns([POS, ERROR]), self.out / name)
        if bad.num_rows:
            errors = pa.table(
                {self.id_name: bad.column(self.id_name), "position": bad.column(POS), "reason": bad.column(ERROR)}
            )
            _write_parquet(errors, self.out / ERRORS_DIR / name)
        done = RangeDone(r.start, r.stop, good.num_rows, bad.num_rows, name, engine, round(seconds, 3))
        self.manifest.done[r.index] = done
        self._save()
        return done

    def finish(self) -> Path:
        """`_errors.parquet`: the error rows of every done range, in DATA order (an empty table when none)."""
        files = [self.out / ERRORS_DIR / d.file for _, d in sorted(self.manifest.done.items()) if d.errors]
        tables = [pq.read_table(f) for f in files if f.exists()]
        if tables:
            table = pa.concat_tables(tables)
        else:
            table = pa.table(
                {
                    self.id_name: pa.array([], self.id_type),
                    "position": pa.array([], pa.int64()),
                    "reason": pa.array([], pa.string()),
                }
            )
        _write_parquet(table, self.out / ERRORS)
        return self.out / ERRORS

    def abandon(self) -> None:
        """A run that scored nothing ended (a crash, Ctrl-C): remove what it wrote, and OUT when it is empty."""
        discard(self.out)
        with contextlib.suppress(OSError):
            self.out.rmdir()


def discard(out: Path) -> None:
    """--restart: remove a previous run's batch files (and nothing else) from `out`."""
    if not out.is_dir():
        return
    with contextlib.suppress(FileNotFoundError):  # first: a kill midway leaves no manifest naming deleted shards
        (out / MANIFEST).unlink()
    for p in out.iterdir():
        if _is_ours(p.name):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
