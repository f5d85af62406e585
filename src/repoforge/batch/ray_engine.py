"""The Ray engine: Ray Data reads the pending ranges of DATA (one read task per range, through the same positional
reader as the local engine), `map_batches` runs them through an actor pool of Triton clients (each actor holds
one client and its own event loop, and scores with the same Scorer), and the driver writes each range with the
same Store once all its rows came back. So the shards and manifest are the local engine's, and either engine
resumes the other's run.

`ray.init()` starts a local Ray (2 CPUs unless told) when none is running; `address` joins a cluster, where every
node must reach DATA and the server, and the driver writes OUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repoforge import lazy
from repoforge.batch.convert import POS
from repoforge.batch.local import Job, score_chunk
from repoforge.batch.model import BatchServerError
from repoforge.batch.scorer import Scorer
from repoforge.batch.source import RowRange, Source, open_source
from repoforge.batch.store import RAY_LOG, Store

LOCAL_CPUS = 2


@functools.lru_cache(maxsize=4)
def _source(path: str) -> Source:
    """DATA opened once per worker process (a CSV or JSON Lines file is read once there, not once per range)."""
    return open_source(path)


def _read_run(path: str, run: list[RowRange], columns: list[str]) -> Iterator[pa.Table]:
    """A block per range of the run, read in one pass."""
    for r, table in _source(path).iter_ranges(run, columns):
        yield table.append_column(POS, pa.array(np.arange(r.start, r.stop, dtype=np.int64)))


def _datasource(path: str, runs: list[list[RowRange]], columns: list[str]) -> Any:
    data = lazy.ray_data()
    Datasource: Any = data.datasource.Datasource
    BlockMetadata, ReadTask = data.block.BlockMetadata, data.datasource.ReadTask

    class RangesDatasource(Datasource):
        """DATA's pending ranges, a read task per run of ranges that share a row group (each decoded once)."""

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[Any]:
            return [
                ReadTask(
                    functools.partial(_read_run, path, run, columns),
                    BlockMetadata(
                        num_rows=sum(r.rows for r in run), size_bytes=None, input_files=None, exec_stats=None
                    ),
                )
                for run in runs
            ]

    return RangesDatasource()


class TritonActor:
    """One Triton client per actor, made once (what Ray Data's actor pool is for): scores a batch of rows."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.loop = asyncio.new_event_loop()
        self.scorer = self.loop.run_until_complete(self._make())

    async def _make(self) -> Scorer:
        return Scorer(self.job.protocol, self.job.url, self.job.info, self.job.options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        positions = batch.column(POS).to_numpy()
        return self.loop.run_until_complete(score_chunk(self.scorer, self.job, batch, positions))


def _server_error(exc: BaseException) -> BatchServerError | None:
    """The BatchServerError an actor raised, however Ray wrapped it."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BatchServerError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    if "BatchServerError" in str(exc):
        text = str(exc)
        return BatchServerError(
            text[text.index("BatchServerError") :].split("\n")[0].removeprefix("BatchServerError: ")
        )
    return None


#: Local Ray starts: Ray gives its raylet a fixed 30 s to register, which a loaded 2-core host can miss.
LOCAL_START_ATTEMPTS = 3


def _init_ray(address: str | None) -> None:
    """Join `address`, or start a local Ray; a local start that times out is retried after a clean shutdown."""
    ray = lazy.ray()

    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            return
        except Exception as exc:  # Ray raises a bare Exception for "timed out during startup"; others re-raise
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == LOCAL_START_ATTEMPTS:
                raise


@contextlib.contextmanager
def _stderr_to(log: Path, on_rows: Callable[[int], None]) -> Iterator[None]:
    """While Ray runs, file descriptor 2 (where Ray's C++ parts and its Python loggers write) goes to `log`; our
    own messages and progress keep going to the terminal through a copy of the original descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    console: TextIO = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    old_stderr = sys.stderr
    sys.stderr = console
    retarget = getattr(on_rows, "retarget", None)
    old_stream = retarget(console) if retarget is not None else None
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            console.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = old_stderr
        if retarget is not None and old_stream is not None:
            retarget(old_stream)
        console.close()


def run_ray(
    job: Job,
    source: Source,
    pending: Sequence[RowRange],
    store: Store,
    on_rows: Callable[[int], None],
    *,
    address: str | None = None,
    actors: int = 2,
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Score `pending` through Ray Data into `store`; BatchServerError when the server stays away past the retries.
    Ray's own output goes to OUT/_ray.log (`say` tells where); a local Ray started here is shut down at the end."""
    ray = lazy.ray()

    if not pending:
        return {"ray_actors": actors}
    log = store.out / RAY_LOG
    say(f"Ray's own logs go to {log}")
    with _stderr_to(log, on_rows):
        started_here = not ray.is_initialized()
        try:
            stats = _run(job, source, pending, store, on_rows, address=address, actors=actors)
        finally:
            if started_here:  # its last words (workers stopping) go to the log too
                ray.shutdown()
    return {**stats, "ray_log": str(log)}


def _run(
    job: Job,
    source: Source,
    pending: Sequence[RowRange],
    store: Store,
    on_rows: Callable[[int], None],
    *,
    address: str | None,
    actors: int,
) -> dict[str, Any]:
    ray = lazy.ray()
    lazy.ray_data()  # ray.data, used below as ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress line, not Ray Data's per-operator log
    if not ray.is_initialized():
        _init_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    per_actor = max(1, job.options.concurrency // actors)
    columns = job.read_columns
    by_index = {r.index: r for r in pending}
    rows_per_range = int(store.manifest.settings["rows_per_shard"])
    ds = ray.data.read_datasource(_datasource(str(source.path), source.read_groups(pending), columns)).map_batches(
        TritonActor,
        fn_constructor_kwargs={"job": job},
        batch_size=job.options.batch_size * per_actor,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.25,
        zero_copy_batch=True,
    )
    buffers: dict[int, list[pa.Table]] = {}
    counts: dict[int, int] = {}
    started: dict[int, float] = {}
    t0 = time.monotonic()
    first: float | None = None
    rows = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if first is None:
                first = time.monotonic()
            else:
                rows += batch.num_rows
            index = pc.divide(batch.column(POS), pa.scalar(rows_per_range, pa.int64())).to_numpy()
            on_rows(batch.num_rows)
            for i in np.unique(index):
                part = batch.filter(pa.array(index == i))
                i = int(i)
                buffers.setdefault(i, []).append(part)
                started.setdefault(i, time.monotonic())
                counts[i] = counts.get(i, 0) + part.num_rows
                if counts[i] == by_index[i].rows:
                    store.write_range(by_index[i], _pop(buffers, i), "ray", time.monotonic() - started[i])
    except Exception as exc:  # a server that stayed away is one message; anything else is re-raised
        found = _server_error(exc)
        if found is not None:
            raise found from None
        raise
    end = time.monotonic()
    steady = rows / (end - first) if first is not None and end > first and rows else None
    # Ray's fixed cost (actors made, first blocks read) is told apart from its rate once running
    return {
        "ray_actors": actors,
        "ray_address": address or "local",
        "ray_first_batch_s": round((first or end) - t0, 3),
        "ray_steady_rows_per_s": None if steady is None else round(steady, 1),
    }


def _pop(buffers: dict[int, list[pa.Table]], i: int) -> Iterable[pa.Table]:
    return buffers.pop(i)
