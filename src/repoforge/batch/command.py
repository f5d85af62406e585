"""`repoforge batch` as one function: check everything that can be checked before a request, reach (or serve)
the model, resume or start OUT, score the ranges not done with the chosen engine, and summarise."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from repoforge import lazy
from repoforge.batch import local
from repoforge.batch.convert import arrow_type
from repoforge.batch.model import BatchArgumentError, BatchServerError, ModelInfo, bind, model_info, parse_maps
from repoforge.batch.progress import Progress
from repoforge.batch.ray_engine import run_ray
from repoforge.batch.scorer import ScoreOptions
from repoforge.batch.source import DataError, RowRange, detect_kind, open_source, ranges
from repoforge.batch.store import Manifest, Store, check_folder, check_resume, discard
from repoforge.targets import target_of
from repoforge.targets.types import BatchEndpoint, TargetArgumentError

Say = Callable[[str], None]
Engine = Literal["local", "ray"]
DEFAULT_ID = "row"
_URL = re.compile(r"^(grpc|http)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d+)/?$")


@dataclass
class BatchResult:
    output: Path
    model: dict[str, Any]
    engine: str
    rows_total: int
    rows_scored: int  # in this run
    rows_errored: int  # in this run
    rows_skipped: int  # done by an earlier run
    ranges_done: int
    ranges_total: int
    seconds: float
    complete: bool
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return (self.rows_scored + self.rows_errored) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "model": self.model,
            "engine": self.engine,
            "rows_total": self.rows_total,
            "rows_scored": self.rows_scored,
            "rows_errored": self.rows_errored,
            "rows_skipped": self.rows_skipped,
            "ranges_done": self.ranges_done,
            "ranges_total": self.ranges_total,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            **self.stats,
        }


def parse_target(target: str | Path) -> tuple[Path | None, BatchEndpoint | None]:
    """A build folder, or a running server's grpc://host:port / http://host:port (usage error otherwise)."""
    text = str(target).strip()
    m = _URL.match(text)
    if m:
        return None, BatchEndpoint(m.group(1), f"{m.group(2)}:{m.group(3)}")  # type: ignore[arg-type]
    path = Path(target)
    if path.is_dir():
        why = target_of(path).cannot("batch", path)
        if why:
            raise BatchArgumentError("TARGET", why)
        return path, None
    if path.is_file():
        raise BatchArgumentError(
            "TARGET", f"{path} is a file; batch needs a built repository folder or a server URL (grpc://host:port)"
        )
    raise BatchArgumentError(
        "TARGET", f"{target!r} is neither a repository folder nor a server URL (grpc://host:port or http://host:port)"
    )


def check_arguments(
    target: str | Path,
    *,
    data: str | Path,
    output: str | Path,
    maps: Sequence[str] = (),
    batch_size: int | None = None,
    concurrency: int = 4,
    rows_per_shard: int = 10_000,
    engine: Engine = "local",
    retries: int = 8,
    max_ranges: int | None = None,
) -> dict[str, tuple[str, ...]]:
    """Fail at once, before a server starts or a request goes out, on what would only fail later."""
    parse_target(target)
    for param, value in (("--concurrency", concurrency), ("--rows-per-shard", rows_per_shard)):
        if value < 1:
            raise BatchArgumentError(param, f"{param} must be >= 1, not {value}")
    if batch_size is not None and batch_size < 1:
        raise BatchArgumentError("--batch-size", f"--batch-size must be >= 1, not {batch_size}")
    if retries < 0:
        raise BatchArgumentError("--retries", f"--retries must be >= 0, not {retries}")
    if max_ranges is not None and max_ranges < 1:
        raise BatchArgumentError("--max-shards", f"--max-shards must be >= 1, not {max_ranges}")
    if not Path(data).exists():
        raise BatchArgumentError("--input", f"input {data} does not exist")
    try:
        detect_kind(Path(data))
    except DataError as exc:
        raise BatchArgumentError("--input", str(exc)) from None
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise BatchArgumentError("--output", f"{out} is a file; give a folder for the shards")
    if engine == "ray":
        try:
            lazy.ray()
        except ImportError:
            raise BatchArgumentError(
                "--engine", "the Ray engine needs Ray: pip install 'repoforge[ray]' (or use --engine local)"
            ) from None
    return parse_maps(maps)


@contextlib.contextmanager
def _endpoint(target: str | Path, model: str, say: Say) -> Iterator[BatchEndpoint]:
    path, ep = parse_target(target)
    if ep is not None:
        yield ep
        return
    assert path is not None
    with contextlib.ExitStack() as stack:
        try:
            served = stack.enter_context(target_of(path).batch_endpoint(path, model, say))
        except TargetArgumentError as exc:  # found before the server starts: batch's usage error
            raise BatchArgumentError(exc.param, str(exc)) from None
        yield served


def _settings(
    source_fp: dict[str, Any], info: ModelInfo, bindings: Sequence[Any], id_column: str | None, rows: int
) -> dict[str, Any]:
    """What a resumed run must share with the run that began OUT (engine, batch size and concurrency may differ)."""
    return {
        "input": source_fp,
        "model": info.name,
        "map": {b.input.name: list(b.columns) for b in bindings},
        "id_column": id_column,
        "rows_per_shard": rows,
        "outputs": [o.name for o in info.outputs],
    }


def _check_dtypes(info: ModelInfo) -> None:
    """Every tensor's dtype has a numpy and an Arrow form, or a usage error before OUT is touched."""
    for t in (*info.inputs, *info.outputs):
        try:
            t.np_dtype  # noqa: B018
            arrow_type(t)
        except (KeyError, ValueError) as exc:
            raise BatchArgumentError("--model", f"model '{info.name}' tensor {t.name!r}: {exc}") from None


def batch(
    target: str | Path,
    model: str,
    *,
    data: str | Path,
    output: str | Path,
    maps: Sequence[str] = (),
    id_column: str | None = None,
    batch_size: int | None = None,
    concurrency: int = 4,
    engine: Engine = "local",
    rows_per_shard: int = 10_000,
    restart: bool = False,
    model_version: str | None = None,
    retries: int = 8,
    timeout_s: float = 60.0,
    max_ranges: int | None = None,
    ray_address: str | None = None,
    ray_actors: int = 2,
    shared_memory: bool = True,
    progress: Say | None = None,
    show_progress: bool = True,
    progress_interval: float = 10.0,
) -> BatchResult:
    """Score every row of `data` with `model` into `output` (Parquet shards + manifest + errors), resuming what an
    earlier run of the same command left. Raises BatchArgumentError (exit 2) before any request for bad input.
    `shared_memory`: the local engine sends tensors through system shared memory when the server is on this host
    (`stats["shared_memory"]` says whether it did)."""
    mapped = check_arguments(
        target, data=data, output=output, maps=maps, batch_size=batch_size, concurrency=concurrency,
        rows_per_shard=rows_per_shard, engine=engine, retries=retries, max_ranges=max_ranges,
    )  # fmt: skip
    say = progress or (lambda _m: None)
    out = Path(output).absolute()
    try:
        source = open_source(data)
    except DataError as exc:
        raise BatchArgumentError("--input", str(exc)) from None
    id_name = id_column or DEFAULT_ID
    # the checks that need DATA but not the model, before a server is started for it
    for inp, cols in mapped.items():
        for c in cols:
            if c not in source.columns:
                raise BatchArgumentError(
                    "--map", f"column {c!r} (for input {inp!r}) is not in DATA; it has {', '.join(source.columns)}"
                )
    if id_column is not None and id_column not in source.columns:
        raise BatchArgumentError(
            "--id-column", f"column {id_column!r} is not in DATA; it has {', '.join(source.columns)}"
        )
    check_folder(out)  # a file, or a folder of something else, fails before a server starts

    started = time.monotonic()
    with _endpoint(target, model, say) as ep:
        info = model_info(ep.protocol, ep.url, model, model_version, timeout=timeout_s)
        if batch_size is not None and info.max_batch_size > 0 and batch_size > info.max_batch_size:
            raise BatchArgumentError(
                "--batch-size",
                f"--batch-size {batch_size} is above model '{model}'s max_batch_size {info.max_batch_size}",
            )
        size = batch_size or (min(256, info.max_batch_size) if info.max_batch_size > 0 else 1)
        bindings = tuple(bind(info, source.schema, mapped, id_column, id_name))
        _check_dtypes(info)
        settings = _settings(source.fingerprint(), info, bindings, id_column, rows_per_shard)
        all_ranges = ranges(source.num_rows, rows_per_shard)
        previous = check_resume(out, info.to_dict(), settings, restart=restart)
        if restart:
            discard(out)
        manifest = previous or Manifest(info.to_dict(), settings, len(all_ranges))
        id_type = source.schema.field(id_column).type if id_column else None
        store = Store(out, manifest, id_name, fresh=previous is None, id_type=id_type)
        store.open()
        skipped = sum(d.rows + d.errors for d in manifest.done.values())
        pending: list[RowRange] = [r for r in all_ranges if r.index not in manifest.done]
        if max_ranges is not None:
            pending = pending[:max_ranges]
        if previous is not None:
            say(f"resuming {out}: {len(manifest.done)} of {len(all_ranges)} shards done, {skipped:,} rows skipped")
        job = local.Job(ep.protocol, ep.url, info, bindings, id_column, id_name,
                  ScoreOptions(batch_size=size, concurrency=concurrency, retries=retries, timeout_s=timeout_s,
                               shared_memory=shared_memory and engine == "local"))  # fmt: skip
        bar = Progress(source.num_rows, skipped, interval=progress_interval, enabled=show_progress)
        before = {i: (d.rows, d.errors) for i, d in manifest.done.items()}
        say(f"scoring {sum(r.rows for r in pending):,} rows of {source.path} with '{model}' v{info.version} "
            f"({engine} engine, batch {size}, concurrency {concurrency}) into {out}")  # fmt: skip
        finished = False
        try:
            if engine == "ray":
                stats = run_ray(job, source, pending, store, bar, address=ray_address, actors=ray_actors, say=say)
            else:
                stats = local.run_local(job, source, pending, store, bar, say)
            finished = True
        except BatchServerError as exc:
            done_now = len(manifest.done)
            if not done_now:
                raise
            raise BatchServerError(
                f"{exc}; {done_now} of {len(all_ranges)} shards are done and kept in {out}: rerun the same command to "
                "resume"
            ) from None
        finally:
            bar.close()
            if finished or manifest.done:
                store.finish()
            else:  # nothing was scored: leave nothing a rerun would take for progress
                store.abandon()
    new = {i: d for i, d in manifest.done.items() if i not in before}
    return BatchResult(
        output=out,
        model=info.to_dict(),
        engine=engine,
        rows_total=source.num_rows,
        rows_scored=sum(d.rows for d in new.values()),
        rows_errored=sum(d.errors for d in new.values()),
        rows_skipped=skipped,
        ranges_done=len(manifest.done),
        ranges_total=len(all_ranges),
        seconds=time.monotonic() - started,
        complete=len(manifest.done) == len(all_ranges),
        stats={"batch_size": size, "concurrency": concurrency, **stats},
    )
