"""The local engine: one asyncio loop reads ranges, makes them into inputs, scores them through `Scorer` (bounded
in flight) and hands each finished range to the Store. A few ranges are open at once, so reading and writing
overlap the requests while memory stays bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from repoforge.batch.convert import chunk_table, prepare
from repoforge.batch.model import Binding, ModelInfo
from repoforge.batch.scorer import Protocol, ScoreOptions, Scorer
from repoforge.batch.source import RowRange, Source
from repoforge.batch.store import RangeDone, Store


@dataclass(frozen=True)
class Job:
    """What either engine needs to score ranges: the model, how columns bind, the id and where to send."""

    protocol: Protocol
    url: str
    info: ModelInfo
    bindings: tuple[Binding, ...]
    id_column: str | None  # None: the id is the row's position
    id_name: str
    options: ScoreOptions

    @property
    def read_columns(self) -> list[str]:
        cols = [c for b in self.bindings for c in b.columns]
        if self.id_column is not None:
            cols.append(self.id_column)
        return list(dict.fromkeys(cols))


async def score_chunk(scorer: Scorer, job: Job, table: pa.Table, positions: np.ndarray) -> pa.Table:
    """One chunk of DATA scored: every row once, with its outputs or the reason it has none."""
    prep = await asyncio.to_thread(prepare, table, job.bindings)
    ok_idx = np.flatnonzero(prep.ok)
    outputs, failed = await scorer.score(prep.arrays)
    ok = prep.ok.copy()
    reasons = dict(prep.reasons)
    if failed:
        keep = np.ones(len(ok_idx), dtype=bool)
        for j, why in failed.items():
            ok[ok_idx[j]] = False
            reasons[int(ok_idx[j])] = why
            keep[j] = False
        outputs = {k: v[keep] for k, v in outputs.items()}
    ids = table.column(job.id_column) if job.id_column is not None else pa.array(positions, type=pa.int64())
    return await asyncio.to_thread(chunk_table, positions, ids, job.id_name, outputs, job.info.outputs, ok, reasons)


async def _run(
    job: Job,
    source: Source,
    pending: Sequence[RowRange],
    store: Store,
    on_rows: Callable[[int], None],
    open_ranges: int,
    say: Callable[[str], None] | None,
) -> Scorer:
    scorer = Scorer(job.protocol, job.url, job.info, job.options, on_rows, say)
    slots = asyncio.Semaphore(open_ranges)
    write_lock = asyncio.Lock()
    tasks: set[asyncio.Task[RangeDone]] = set()

    async def one(r: RowRange, table: pa.Table) -> RangeDone:
        try:
            started = time.monotonic()
            chunk = await score_chunk(scorer, job, table, np.arange(r.start, r.stop, dtype=np.int64))
            async with write_lock:
                return await asyncio.to_thread(store.write_range, r, [chunk], "local", time.monotonic() - started)
        finally:
            slots.release()

    def reap() -> None:
        for t in [t for t in tasks if t.done()]:
            tasks.discard(t)
            t.result()  # the first failure stops the run

    reader = source.iter_ranges(pending, job.read_columns)
    try:
        while True:
            await slots.acquire()
            reap()
            item = await asyncio.to_thread(next, reader, None)
            if item is None:
                slots.release()
                break
            tasks.add(asyncio.create_task(one(*item)))
        while tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            reap()
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        await scorer.close()
    return scorer


def run_local(
    job: Job,
    source: Source,
    pending: Sequence[RowRange],
    store: Store,
    on_rows: Callable[[int], None],
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score `pending` ranges into `store`; BatchServerError when the server stays away past the retries."""
    scorer = asyncio.run(_run(job, source, pending, store, on_rows, open_ranges=3, say=say))
    return {"requests": scorer.requests, "retries": scorer.retried, "shared_memory": scorer.used_shared_memory}
