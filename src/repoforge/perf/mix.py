"""`repoforge perf --models 'm*' --distribution zipf:1.1`: a load spread over many models through the multiplexing
gateway (`serving:`), reporting the hit ratio, the cold loads and latency percentiles cold vs warm.

Why not perf_analyzer: it measures one model per run, and a many-model mix is about which models are loaded when
requests arrive. Each closed-loop client picks its next model by the distribution (Zipf: the model of rank k is
asked for in proportion to 1/k^s, in the order the models are given), sends a KServe v2 request to the gateway and
reads its `x-repoforge-model-load` header: `hit` (warm), `load` (this request loaded the model) or `join` (it waited
for a load another started); both of the last are cold. Like `perf`, one point per concurrency level, a report.json
and report.md written atomically, and the host's load with every run (the numbers mean little on a busy host)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from repoforge.contract import MODEL_LOAD_HEADER
from repoforge.errors import ArgumentError
from repoforge.output import atomic_dir
from repoforge.perf.analyzer import PerfError, parse_concurrency
from repoforge.perf.report import host_load
from repoforge.servers.ports import free_port
from repoforge.servers.process import ManagedProcess
from repoforge.triton.inputs import make_inputs, triton_dtype
from repoforge.triton.reader import read_repository

Progress = Callable[[str], None]
DEFAULT_ZIPF_S = 1.1
COLD = ("load", "join")


class MixArgumentError(ArgumentError, PerfError):
    """A wrong `perf --models` argument, found before any server starts."""


def parse_distribution(text: str) -> tuple[str, float]:
    """`zipf` (s = 1.1), `zipf:1.3` or `uniform`."""
    kind, _, arg = text.strip().lower().partition(":")
    if kind == "uniform" and not arg:
        return "uniform", 0.0
    if kind == "zipf":
        try:
            s = float(arg) if arg else DEFAULT_ZIPF_S
        except ValueError:
            s = -1.0
        if s > 0:
            return "zipf", s
    raise MixArgumentError("--distribution", f"--distribution {text!r}: expected zipf, zipf:S (S > 0, e.g. "
                           "zipf:1.1) or uniform")  # fmt: skip


def weights(kind: str, s: float, n: int) -> np.ndarray:
    """Each model's share of the requests, in the order the models are given."""
    w = np.ones(n) if kind == "uniform" else 1.0 / np.arange(1, n + 1) ** s
    return np.asarray(w / w.sum())


def expand_models(patterns: list[str], known: list[str]) -> list[str]:
    """`a,b,c` and shell patterns (`m0*`) against the served models, in the order given (a pattern's matches sorted);
    a name or pattern that matches nothing is a usage error naming what is served."""
    out: list[str] = []
    for pattern in patterns:
        found = sorted(fnmatch.filter(known, pattern)) if any(c in pattern for c in "*?[") else (
            [pattern] if pattern in known else [])  # fmt: skip
        if not found:
            sample = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
            raise MixArgumentError("--models", f"--models {pattern!r} matches no served model; served: {sample}")
        out += [m for m in found if m not in out]
    return out


@dataclass
class MixPoint:
    """One concurrency level of the mix."""

    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    throughput: float  # answered requests per second
    hits: int
    loads: int
    joins: int
    static: int  # answered without the header: the gateway does not multiplex (every model loaded)
    hit_ratio: float | None
    latency_ms: dict[str, dict[str, float | None]]  # all / warm / cold -> p50, p90, p99, max, n
    models_asked: int
    top_models: list[tuple[str, int]]
    error_samples: list[str] = field(default_factory=list)


@dataclass
class MixReport:
    target: str
    models: list[str]
    distribution: str
    points: list[MixPoint]
    gateway: dict[str, float]  # counters of the gateway's /metrics across the run (loads, evictions, ...)
    host_start: dict[str, Any]
    host_end: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [f"# perf --models: {len(self.models)} models, {self.distribution}", "",
                 f"Target: `{self.target}`; host load (1/5/15 min) at start {self.host_start.get('load_avg')}, at end "
                 f"{self.host_end.get('load_avg')} on {self.host_start.get('cpu_count')} CPUs.", "",
                 "| clients | req/s | ok | errors | hit ratio | cold loads | joins | p50 ms | p99 ms | warm p50 | "
                 "warm p99 | cold p50 | cold p99 |", "|" + "---|" * 13]  # fmt: skip
        for p in self.points:
            lat = p.latency_ms
            cells = [lat["all"]["p50"], lat["all"]["p99"], lat["warm"]["p50"], lat["warm"]["p99"], lat["cold"]["p50"],
                     lat["cold"]["p99"]]  # fmt: skip
            ratio = "-" if p.hit_ratio is None else f"{p.hit_ratio:.3f}"
            lines.append(f"| {p.concurrency} | {p.throughput:.1f} | {p.ok} | {sum(p.errors.values())} | {ratio} | "
                         f"{p.loads} | {p.joins} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells)
                         + " |")  # fmt: skip
        if self.gateway:
            lines += ["", "Gateway counters over the run: "
                      + ", ".join(f"{k} {v:g}" for k, v in sorted(self.gateway.items()))]  # fmt: skip
        return "\n".join(lines) + "\n"


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(values) * 1000
    p50, p90, p99 = (round(float(np.percentile(a, q)), 2) for q in (50, 90, 99))
    return {"p50": p50, "p90": p90, "p99": p99, "max": round(float(a.max()), 2), "n": len(values)}


# -- the target: a running gateway, or a build folder served by one for the run ---------------------------------------
@contextlib.contextmanager
def _gateway(target: str, say: Progress, timeout_s: float = 180.0) -> Iterator[str]:
    """The gateway's base URL: TARGET itself, or a `repoforge gateway` started on a build folder for the run (its
    Triton in explicit model control when the build has `serving:`), stopped after, also on failure."""
    path = Path(target)
    if not path.is_dir():
        base = target if target.startswith(("http://", "https://")) else f"http://{target}"
        yield base.rstrip("/")
        return
    with start_gateway(str(path), say, timeout_s=timeout_s) as base:
        yield base


@contextlib.contextmanager
def start_gateway(target: str, say: Progress, args: Sequence[str] = (), timeout_s: float = 180.0) -> Iterator[str]:
    """A `repoforge gateway TARGET ARGS` process on a free port (TARGET: a build folder or a running Triton), its base
    URL once it answers /v2/health/ready; stopped after, also on failure."""
    path = target

    port = free_port("127.0.0.1")
    log = Path(tempfile.mkdtemp(prefix="repoforge-perf-gateway-")) / "gateway.log"
    proc = ManagedProcess([sys.executable, "-m", "repoforge", "gateway", str(path), "--port", str(port), *args],
                          log_path=log, name="repoforge gateway")  # fmt: skip
    say(f"starting repoforge gateway on {path} (port {port}, log {log})")
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            if not proc.alive:
                raise PerfError(f"the gateway on {path} exited before it was ready:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise PerfError(f"the gateway on {path} was not ready within {timeout_s:g} s:\n{proc.log_tail()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.stop(timeout=30)
        shutil.rmtree(log.parent, ignore_errors=True)


def _bodies(target: str, models: list[str], request: Path | None) -> dict[str, bytes]:
    """The request each model gets: `request` (one KServe v2 JSON body for all) or, for a build folder, random data
    of each model's required inputs, made from its config."""
    if request is not None:
        text = request.read_text()
        try:
            json.loads(text)
        except ValueError as exc:
            raise MixArgumentError("--request", f"--request {request} is not JSON: {exc}") from None
        return dict.fromkeys(models, text.encode())

    configs = {m.name: m.config for m in read_repository(Path(target))}
    out = {}
    for name in models:
        cfg = configs[name]
        dtypes = {t.name: triton_dtype(t.data_type) for t in cfg.input}
        inputs = [{"name": k, "datatype": dtypes[k], "shape": list(v.shape),
                   "data": [x.decode() if isinstance(x, bytes) else x for x in v.reshape(-1).tolist()]}
                  for k, v in make_inputs(cfg).items()]  # fmt: skip
        out[name] = json.dumps({"inputs": inputs}).encode()
    return out


def _counters(base: str, headers: dict[str, str]) -> dict[str, float]:
    try:
        text = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    wanted = ("model_hits", "model_misses", "model_load_joins", "model_loads", "model_evictions",
              "model_unloads_in_flight")  # fmt: skip
    for family in text_string_to_metric_families(text):
        if family.name.removeprefix("repoforge_gateway_") in wanted:
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = s.name.removeprefix("repoforge_gateway_") + "".join(f"{{{v}}}" for v in s.labels.values())
                    out[key] = s.value
    return out


async def _run_point(base: str, models: list[str], p: np.ndarray, bodies: dict[str, bytes], clients: int,
                     duration_s: float, headers: dict[str, str], timeout_s: float, seed: int) -> MixPoint:  # fmt: skip

    records: list[tuple[str, str, int, float]] = []  # model, how, status, seconds
    samples: list[str] = []
    stop_at = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    send_headers = {"content-type": "application/json", **headers}

    async def client(http: httpx.AsyncClient, rng: np.random.Generator) -> None:
        while time.monotonic() < stop_at:
            model = models[int(rng.choice(len(models), p=p))]
            started = time.perf_counter()
            try:
                r = await http.post(f"{base}/v2/models/{model}/infer", content=bodies[model], headers=send_headers)
                status, how = r.status_code, r.headers.get(MODEL_LOAD_HEADER, "static")
                if status != 200 and len(samples) < 5:
                    samples.append(f"{model}: {status} {r.text[:200]}")
            except httpx.HTTPError as exc:
                status, how = 0, "error"
                if len(samples) < 5:
                    samples.append(f"{model}: {type(exc).__name__} {exc}")
            records.append((model, how, status, time.perf_counter() - started))

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        seeds = np.random.SeedSequence(seed).spawn(clients)
        await asyncio.gather(*(client(http, np.random.default_rng(s)) for s in seeds))
    elapsed = time.monotonic() - started
    ok = [r for r in records if r[2] == 200]
    hows = Counter(r[1] for r in ok)
    multiplexed = hows["hit"] + hows["load"] + hows["join"]
    return MixPoint(
        concurrency=clients, duration_s=round(elapsed, 3), requests=len(records), ok=len(ok),
        errors=dict(Counter(str(r[2]) for r in records if r[2] != 200)), throughput=round(len(ok) / elapsed, 2),
        hits=hows["hit"], loads=hows["load"], joins=hows["join"], static=hows["static"],
        hit_ratio=round(hows["hit"] / multiplexed, 4) if multiplexed else None,
        latency_ms={"all": _percentiles([r[3] for r in ok]),
                    "warm": _percentiles([r[3] for r in ok if r[1] in ("hit", "static")]),
                    "cold": _percentiles([r[3] for r in ok if r[1] in COLD])},
        models_asked=len({r[0] for r in records}), top_models=Counter(r[0] for r in records).most_common(5),
        error_samples=samples,
    )  # fmt: skip


def perf_models(
    target: str | Path,
    models: list[str],
    *,
    distribution: str = "zipf",
    concurrency: str | list[int] = "16",
    duration_s: float = 30.0,
    api_key_env: str | None = None,
    request: Path | None = None,
    timeout_s: float = 300.0,
    seed: int = 0,
    output: str | Path = "perf-report",
    progress: Progress | None = None,
) -> MixReport:
    """Spread a closed-loop load over `models` (names or patterns) through the gateway at TARGET (a running
    gateway's host:port, or a build folder served by one for the run), one point per concurrency level; write
    report.json and report.md into `output`."""
    say = progress or (lambda _m: None)
    kind, s = parse_distribution(distribution)
    try:
        loads = parse_concurrency(concurrency)
    except PerfError as exc:
        raise MixArgumentError("--concurrency", str(exc)) from None
    if duration_s <= 0:
        raise MixArgumentError("--duration", f"--duration must be > 0 seconds, not {duration_s:g}")
    if not models:
        raise MixArgumentError("--models", "--models needs at least one name or pattern")
    path = Path(target)
    if path.is_file() or (not path.is_dir() and ":" not in str(target)):
        raise MixArgumentError("TARGET", f"{target!r}: perf --models measures through the gateway: give a build "
                               "folder (served by a gateway for the run) or a running gateway's host:port")  # fmt: skip
    if not path.is_dir() and request is None:
        raise MixArgumentError("--request", "with a running gateway, give the KServe v2 JSON body to send with "
                               "--request FILE (from a build folder it is made from each model's config)")  # fmt: skip
    headers: dict[str, str] = {}
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise MixArgumentError("--api-key-env", f"--api-key-env {api_key_env}: the variable is not set")
        headers["Authorization"] = f"Bearer {key}"
    _check_output(Path(output))

    with _gateway(str(target), say) as base:
        try:
            served = httpx.get(f"{base}/v2/models", headers=headers, timeout=30).json()["models"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise PerfError(f"no gateway answers GET {base}/v2/models: {exc}") from None
        names = expand_models([m.strip() for m in models if m.strip()], list(served))
        bodies = _bodies(str(target), names, request)
        p = weights(kind, s, len(names))
        label = "uniform" if kind == "uniform" else f"zipf:{s:g}"
        start, before = host_load(), _counters(base, headers)
        points = []
        for i, clients in enumerate(int(c) for c in loads):
            say(f"{clients} clients over {len(names)} models ({label}) for {duration_s:g} s")
            point = asyncio.run(_run_point(base, names, p, bodies, clients, duration_s, headers, timeout_s, seed + i))
            say(f"  {point.throughput:.1f} req/s, hit ratio {point.hit_ratio}, {point.loads} cold loads, "
                f"{sum(point.errors.values())} errors")  # fmt: skip
            points.append(point)
        after = _counters(base, headers)
    gateway = {k: v - before.get(k, 0.0) for k, v in after.items()}
    report = MixReport(str(target), names, label, points, gateway, start, host_load())
    _write(report, Path(output))
    return report


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise MixArgumentError("--output", f"{out} exists and holds no perf report; choose another report directory")


def _write(report: MixReport, out: Path) -> None:
    """report.json and report.md into a temporary sibling that then replaces `out` (an earlier report is replaced)."""
    with atomic_dir(out, force=True) as tmp:
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "report.md").write_text(report.markdown())
