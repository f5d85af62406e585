"""Many models on one Triton: the gateway loads a model on its first request and unloads the least recently used
idle one when `max_loaded` or the memory budget would be passed (Triton runs with `--model-control-mode explicit`).

Why here and not in Triton: load, infer and unload are separate calls to Triton, so two clients race (an unload
lands while the other's request is in flight; triton-inference-server/server #3583 asks for reference counts), and
Triton evicts nothing by itself (#7279, #4188). The gateway sees every request, so it keeps the counts:

- every request holds its model (`hold()`) from before it is sent until its answer is back;
- a model is picked for unloading only while nobody holds it, and from then on it is `unloading`: a request for
  it waits until the unload is done and loads it again, so no request reaches a model being unloaded;
- concurrent first requests for a model share one load; a failed load fails all of them with Triton's reason;
- a model's memory is measured when its load ends: the RSS of the backend stub processes that serve it (found by
  their command line), plus tritonserver's own growth across the load when no other load overlapped it. A model
  never loaded yet is assumed to need the largest of those measured so far (`model_bytes_estimate` before the
  first, 256 MiB unless the spec says otherwise): the budget is a bound, so the estimate errs high;
- an unload is done when Triton no longer lists the model and its stub processes have exited, so the RSS read for
  the next decision no longer holds it.

The pattern is Ray Serve's `_ModelMultiplexWrapper` (an LRU of loaded models per replica), with in-flight counts
so that eviction never pulls a model from under a request."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from repoforge.gateway.errors import RequestError

log = logging.getLogger("repoforge.gateway.multiplex")

PREFIX = "repoforge_gateway"
#: Memory assumed for a model when nothing has been measured yet and the spec gives no `model_bytes_estimate`.
DEFAULT_MODEL_BYTES = 256 * 1024 * 1024


@dataclass
class MultiplexSettings:
    """The spec's `serving:` (sizes in bytes), plus what only the running gateway knows."""

    max_loaded: int | None = None
    memory_budget: int | None = None
    always_loaded: list[str] = field(default_factory=list)
    model_bytes_estimate: int | None = None
    server_pid: int | None = None  # tritonserver's pid: its RSS (with its children's) is what the budget bounds
    load_timeout_s: float = 300.0  # how long a request waits for its model (loads before it, room, the load)
    load_concurrency: int = 2  # loads at once; RSS growth is measured only for a load that ran alone
    tenants: list[dict[str, Any]] = field(default_factory=list)  # serving.tenants as the lock records them

    @classmethod
    def from_lock(cls, serving: dict[str, Any]) -> MultiplexSettings:
        return cls(max_loaded=serving.get("max_loaded"), memory_budget=serving.get("memory_budget"),
                   always_loaded=list(serving.get("always_loaded") or []),
                   model_bytes_estimate=serving.get("model_bytes_estimate"),
                   tenants=list(serving.get("tenants") or []))  # fmt: skip


# -- the server's memory -----------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    kids, todo, found = _children(), [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (Triton's Python backend runs each model instance in a stub
    process of its own: its memory is the model's)."""
    return sum(_rss(p) for p in _descendants(pid))


def _stub_model(pid: int) -> str | None:
    """The model a backend stub process serves: its first argument is the model's file,
    `<repository>/<model>/<version>/<file>` (seen on Triton 2.51's `triton_python_backend_stub`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    if len(args) < 2 or not args[0].endswith(b"_stub"):
        return None
    parts = args[1].decode(errors="replace").rstrip("/").split("/")
    return parts[-3] if len(parts) >= 3 else None


def model_rss(server_pid: int, name: str) -> tuple[int, int]:
    """(processes, resident bytes) of the stub processes that serve `name` under `server_pid`. Counted per model,
    not as the tree's growth across a load, so another model's stub exiting meanwhile cannot hide a model's size
    (it did: CI saw growths near 0, the estimate fell, and the budget was passed by 200 MiB)."""
    pids = model_stubs(server_pid, name)
    return len(pids), sum(_rss(p) for p, _ in pids)


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells a pid from a later process given the same
    number; None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def model_stubs(server_pid: int, name: str) -> list[tuple[int, str]]:
    """(pid, start time) of the stub processes that serve `name`. This reads every process of the host (tens of
    milliseconds on a busy one): the multiplexer calls it in a thread, never on the event loop, whose other
    requests (other tenants' hits) would wait that long."""
    out = []
    for pid in _descendants(server_pid)[1:]:
        if _stub_model(pid) == name and (start := _start_time(pid)) is not None:
            out.append((pid, start))
    return out


def alive(stubs: list[tuple[int, str]]) -> bool:
    """Whether any of these processes still runs: one small read per process, cheap enough to poll."""
    return any(_start_time(pid) == start for pid, start in stubs)


# -- the table -----------------------------------------------------------------------------------------------------
@dataclass(eq=False)  # identity: entries live in a set while they load
class _Model:
    name: str
    state: str = "loading"  # loading -> loaded -> unloading -> (removed)
    refs: int = 0
    last_used: float = 0.0
    bytes: int = 0
    measured: bool = False
    loaded_at: float = 0.0
    done: asyncio.Future[None] | None = None  # set when loading or unloading ends (result: the outcome)
    stubs: list[tuple[int, str]] = field(default_factory=list)  # (pid, start time) of its stub processes


class LoadFailed(RequestError):
    pass


class _Hold:
    """What `Multiplexer.hold` returns: a class rather than an asynccontextmanager, with the hit taken without a
    coroutine of its own, because every request through the multiplexer enters and leaves one."""

    __slots__ = ("_mux", "_name", "_entry")

    def __init__(self, mux: Multiplexer, name: str) -> None:
        self._mux, self._name = mux, name
        self._entry: _Model | None = None

    async def __aenter__(self) -> str:
        mux = self._mux
        entry = mux.models.get(self._name)
        if entry is not None and entry.state == "loaded":  # a hit: what _acquire does first, inline
            entry.refs += 1
            entry.last_used = time.monotonic()
            mux.metrics.hits.inc()
            self._entry = entry
            return "hit"
        self._entry, how = await mux._acquire(self._name)
        return how

    async def __aexit__(self, *exc: object) -> None:
        assert self._entry is not None
        if self._mux._release(self._entry):
            await self._mux._notify()


class _Metrics:
    def __init__(self, registry: CollectorRegistry, mux: Multiplexer) -> None:
        self.hits = Counter(f"{PREFIX}_model_hits", "Requests whose model was loaded", registry=registry)
        self.misses = Counter(f"{PREFIX}_model_misses", "Requests that started their model's load", registry=registry)
        self.joined = Counter(f"{PREFIX}_model_load_joins", "Requests that waited for a load another started",
                              registry=registry)  # fmt: skip
        self.loads = Counter(f"{PREFIX}_model_loads", "Model loads by outcome", ["outcome"], registry=registry)
        self.load_seconds = Histogram(f"{PREFIX}_model_load_seconds", "Cold-load latency (Triton's load call)",
                                      registry=registry,
                                      buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120))  # fmt: skip
        self.evictions = Counter(f"{PREFIX}_model_evictions", "Models unloaded to make room", ["reason"],
                                 registry=registry)  # fmt: skip
        self.unsafe_unloads = Counter(f"{PREFIX}_model_unloads_in_flight",
                                      "Unloads started while the model had requests in flight (always 0)",
                                      registry=registry)  # fmt: skip
        self._mux = mux
        registry.register(self)

    def collect(self) -> Iterator[Any]:
        mux = self._mux
        loaded = [m for m in mux.models.values() if m.state == "loaded"]
        yield GaugeMetricFamily(f"{PREFIX}_models_loaded", "Models loaded now (loading ones included)",
                                value=mux.occupied())  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_models_loaded_peak", "Most models loaded at once since start",
                                value=mux.peak)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_models_in_flight", "Requests holding a model now",
                                value=sum(m.refs for m in mux.models.values()))  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_loaded_bytes", "Memory of the loaded models (measured or estimated)",
                                value=sum(m.bytes for m in loaded))  # fmt: skip
        if mux.settings.max_loaded is not None:
            yield GaugeMetricFamily(f"{PREFIX}_models_max_loaded", "serving.max_loaded", value=mux.settings.max_loaded)
        if mux.settings.memory_budget is not None:
            yield GaugeMetricFamily(f"{PREFIX}_memory_budget_bytes", "serving.memory_budget",
                                    value=mux.settings.memory_budget)  # fmt: skip
        rss = mux.server_rss()
        if rss is not None:
            yield GaugeMetricFamily(f"{PREFIX}_server_rss_bytes", "RSS of tritonserver and its children", value=rss)


class Multiplexer:
    """Loaded models, their in-flight counts and their LRU order; `hold(name)` around every request."""

    def __init__(self, client: Any, settings: MultiplexSettings, registry: CollectorRegistry,
                 known: Callable[[], Any]) -> None:  # fmt: skip
        self.client = client  # tritonclient.grpc.aio
        self.settings = settings
        self.models: dict[str, _Model] = {}
        self.peak = 0
        self._known = known  # async () -> names in Triton's repository (any state)
        self._changed = asyncio.Condition()  # notified when a hold ends or a model leaves
        self._room_waiters = 0  # requests waiting on `_changed` for a loaded model to become idle
        self._room_lock = asyncio.Lock()  # one request at a time makes room and reserves its slot
        self._load_slots = asyncio.Semaphore(settings.load_concurrency)
        self._running: set[_Model] = set()
        self._measured: dict[str, int] = {}  # model -> RSS growth at its last load
        self._rss, self._rss_at = 0, float("-inf")  # server_rss's last measurement and when
        self.metrics = _Metrics(registry, self)

    # -- what the routes use -------------------------------------------------------------------------------------
    def hold(self, name: str) -> _Hold:
        """`async with mux.hold(name) as how`: the model stays loaded (and is not picked for unloading) while the
        block runs; `how` says how it came to be loaded for this request: `hit`, `load` (this request loaded it) or
        `join` (it waited for another's load)."""
        return _Hold(self, name)

    def _release(self, entry: _Model) -> bool:
        """A hold ends; True when a request waits for room (`_make_room`) and must be told."""
        entry.refs -= 1
        entry.last_used = time.monotonic()
        return self._room_waiters > 0

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def start(self) -> None:
        """Load `always_loaded` (failing the gateway's start with Triton's reason when one does not load)."""
        for name in self.settings.always_loaded:
            async with self.hold(name):
                pass

    def occupied(self) -> int:
        return sum(1 for m in self.models.values() if m.state in ("loading", "loaded", "unloading"))

    def server_rss(self) -> int | None:
        """tritonserver's RSS with its children's, for /metrics and the index: the last measurement when under a
        second old (a scrape must not add a scan of the host's processes to the event loop each time)."""
        pid = self.settings.server_pid
        if pid is None:
            return None
        if time.monotonic() - self._rss_at > 1.0:
            self._rss, self._rss_at = tree_rss(pid), time.monotonic()
        return self._rss or None

    async def _measure_server_rss(self) -> int | None:
        """A fresh `server_rss`, read in a thread (the scan of /proc takes tens of ms on a busy host)."""
        pid = self.settings.server_pid
        if pid is None:
            return None
        self._rss = await asyncio.to_thread(tree_rss, pid)
        self._rss_at = time.monotonic()
        return self._rss or None

    def index(self, names: list[str]) -> dict[str, Any]:
        """`GET /v2/repository/index`: every model of the repository and what the gateway knows of it."""
        now = time.monotonic()
        rows = []
        for name in names:
            m = self.models.get(name)
            row: dict[str, Any] = {"name": name, "state": (m.state if m else "unloaded").upper()}
            if m is not None:
                row.update(in_flight=m.refs, bytes=m.bytes, bytes_measured=m.measured,
                           idle_s=round(now - m.last_used, 3) if m.last_used else None)  # fmt: skip
            if name in self.settings.always_loaded:
                row["always_loaded"] = True
            rows.append(row)
        s = self.settings
        return {"models": rows, "loaded": self.occupied(), "max_loaded": s.max_loaded, "memory_budget": s.memory_budget,
                "loaded_bytes": sum(m.bytes for m in self.models.values() if m.state == "loaded"),
                "server_rss": self.server_rss(), "estimate_bytes": self.estimate(None)}  # fmt: skip

    def estimate(self, name: str | None) -> int:
        """Memory a load of `name` is expected to add: its own last measurement, else the largest measured one,
        else `model_bytes_estimate`, else DEFAULT_MODEL_BYTES."""
        known = self._measured.get(name) if name else None
        if known is not None:
            return known
        if self._measured:
            return max(self._measured.values())
        return self.settings.model_bytes_estimate or DEFAULT_MODEL_BYTES

    # -- acquiring ---------------------------------------------------------------------------------------------------
    async def _acquire(self, name: str) -> tuple[_Model, str]:
        deadline = time.monotonic() + self.settings.load_timeout_s
        counted, how = False, "hit"
        while True:
            entry = self.models.get(name)
            if entry is not None and entry.state == "loaded":
                entry.refs += 1
                entry.last_used = time.monotonic()
                if not counted:
                    self.metrics.hits.inc()
                return entry, how
            if entry is not None:  # loading (join it) or unloading (wait, then load it again)
                assert entry.done is not None
                if entry.state == "loading" and how != "load":
                    how = "join"  # waits for a load another request started
                    if not counted:
                        self.metrics.joined.inc()
                        counted = True
                try:
                    await asyncio.wait_for(asyncio.shield(entry.done), max(deadline - time.monotonic(), 0.001))
                except asyncio.TimeoutError:
                    raise RequestError(503, f"model '{name}' did not load within {self.settings.load_timeout_s:g} s"
                                       ) from None  # fmt: skip
                except RequestError:
                    if entry.state == "loading" or self.models.get(name) is not entry:
                        raise  # its load failed: every waiter gets Triton's reason
                continue
            if name not in await self._known():
                raise RequestError(404, f"unknown model '{name}': not in the server's repository")
            if not counted:
                self.metrics.misses.inc()
                counted = True
            if await self._load(name, deadline):
                how = "load"

    async def _load(self, name: str, deadline: float) -> bool:
        """Make room and reserve the slot (one request at a time decides), then load `name` (at most
        `load_concurrency` loads at once). Returns when the load ended (True) or when another request had started
        it meanwhile (False); the caller loops and takes it."""
        budget = max(deadline - time.monotonic(), 0.001)
        try:
            await asyncio.wait_for(self._room_lock.acquire(), budget)
        except asyncio.TimeoutError:
            raise RequestError(503, f"model '{name}' did not load within {self.settings.load_timeout_s:g} s (no room "
                               "was made for it)") from None  # fmt: skip
        try:
            if name in self.models:  # another request started its load (or an unload) meanwhile
                return False
            await self._make_room(name, deadline)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = _Model(name, done=done, bytes=self.estimate(name))  # reserved: counts toward both limits
            self.models[name] = entry
            self.peak = max(self.peak, self.occupied())
        finally:
            self._room_lock.release()
        try:
            async with self._load_slots:
                await self._run_load(entry, done)
        finally:
            async with self._changed:
                self._changed.notify_all()
        return True

    async def _run_load(self, entry: _Model, done: asyncio.Future[None]) -> None:
        name = entry.name
        alone = not self._running
        for other in self._running:  # their RSS growth is no longer theirs alone
            other.measured = False
        entry.measured = alone
        self._running.add(entry)
        pid = self.settings.server_pid
        before = _rss(pid) if pid is not None else None
        started = time.perf_counter()
        try:
            await self.client.load_model(name, client_timeout=self.settings.load_timeout_s)
        except Exception as exc:  # noqa: BLE001 - Triton's reason goes to every waiting request
            self._running.discard(entry)
            self.metrics.loads.labels("failed").inc()
            del self.models[name]
            message = getattr(exc, "message", None)
            reason = (message() if callable(message) else None) or str(exc)
            failure = LoadFailed(503, f"model '{name}' failed to load: {reason}")
            done.set_exception(failure)
            done.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            log.warning("load of %s failed: %s", name, reason)
            raise failure from None
        self._running.discard(entry)
        seconds = time.perf_counter() - started
        self.metrics.loads.labels("ok").inc()
        self.metrics.load_seconds.observe(seconds)
        entry.stubs = await asyncio.to_thread(model_stubs, pid, name) if pid is not None else []
        stubs, stub_bytes = len(entry.stubs), sum(_rss(p) for p, _ in entry.stubs)
        own = max(_rss(pid) - before, 0) if pid is not None and before is not None and entry.measured else 0
        if stubs or (entry.measured and pid is not None):  # a backend without stubs: tritonserver's growth alone
            entry.measured, entry.bytes = True, stub_bytes + own
            self._measured[name] = entry.bytes
        else:  # overlapped with another load (no stubs to count), or no pid: the estimate stays (the index says so)
            entry.measured, entry.bytes = False, self.estimate(name)
        entry.state, entry.loaded_at, entry.last_used = "loaded", time.monotonic(), time.monotonic()
        done.set_result(None)
        log.info("loaded %s in %.2f s (%s bytes %s)", name, seconds, entry.bytes,
                 "measured" if entry.measured else "estimated")  # fmt: skip

    async def _over(self, name: str) -> str | None:
        """Why loading `name` now would pass a limit (None: it fits). Loads in progress count with their estimate
        on top of the measured RSS (their growth is not all there yet)."""
        s = self.settings
        if s.max_loaded is not None and self.occupied() + 1 > s.max_loaded:
            return "max_loaded"
        if s.memory_budget is not None:
            rss = await self._measure_server_rss()
            loading = sum(m.bytes for m in self.models.values() if m.state == "loading")
            used = (rss + loading) if rss is not None else sum(m.bytes for m in self.models.values())
            if used + self.estimate(name) > s.memory_budget:
                return "memory_budget"
        return None

    def _victim(self) -> _Model | None:
        idle = [m for m in self.models.values()
                if m.state == "loaded" and m.refs == 0 and m.name not in self.settings.always_loaded]  # fmt: skip
        return min(idle, key=lambda m: m.last_used) if idle else None

    async def _make_room(self, name: str, deadline: float) -> None:
        while (reason := await self._over(name)) is not None:
            victim = self._victim()
            if victim is None:
                if reason == "memory_budget" and not any(
                    m.state != "loaded" or m.name not in self.settings.always_loaded for m in self.models.values()
                ):
                    log.warning("loading %s passes the memory budget: nothing is left to unload", name)
                    return
                # Every loaded model is in use: wait for a request to end. Counted before the lock is taken, with
                # no await between _victim() and the wait, so a hold that ends meanwhile sees the count and tells.
                self._room_waiters += 1
                try:
                    async with self._changed:
                        await asyncio.wait_for(self._changed.wait(), max(deadline - time.monotonic(), 0.001))
                except asyncio.TimeoutError:
                    raise RequestError(503, f"no room to load model '{name}': all {self.occupied()} loaded "
                                       f"models have requests in flight ({reason})") from None  # fmt: skip
                finally:
                    self._room_waiters -= 1
                continue
            await self._unload(victim, reason)

    async def _unload(self, victim: _Model, reason: str) -> None:
        # From here on no request takes it: _acquire sees `unloading` and waits for `done`.
        if victim.refs:
            self.metrics.unsafe_unloads.inc()
        victim.state = "unloading"
        victim.done = asyncio.get_running_loop().create_future()
        self.metrics.evictions.labels(reason).inc()
        log.info("unloading %s (%s, idle %.1f s)", victim.name, reason, time.monotonic() - victim.last_used)
        try:
            await self.client.unload_model(victim.name, client_timeout=60)
            await self._wait_unloaded(victim)
        finally:
            del self.models[victim.name]
            victim.done.set_result(None)
            async with self._changed:
                self._changed.notify_all()

    async def _wait_unloaded(self, victim: _Model, timeout: float = 60.0) -> None:
        """Triton answers the unload call before the model is gone (its instances finish in the background): wait
        until the model is no longer READY or UNLOADING in the repository index and its stub processes have exited,
        so its memory is free. The stubs found at its load are polled (a read per process); the index and a scan of
        the host's processes (in a thread) confirm once they are gone. Polling the index and scanning /proc every
        50 ms on the event loop held other tenants' hits up to 35 ms each on a busy host (bench/RESULTS.md)."""
        name, pid = victim.name, self.settings.server_pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive(victim.stubs):
                await asyncio.sleep(0.05)
                continue
            index = await self.client.get_model_repository_index(as_json=True, client_timeout=10)
            states = {m.get("state") for m in index.get("models", []) if m.get("name") == name}
            if not states & {"READY", "UNLOADING", "LOADING"}:
                victim.stubs = await asyncio.to_thread(model_stubs, pid, name) if pid is not None else []
                if not victim.stubs:
                    return
            await asyncio.sleep(0.1)
        log.warning("model %s still not unloaded after %g s", name, timeout)
