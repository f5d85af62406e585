"""Requests for a batch run: client-side batches, bounded in flight, retried with backoff on transient errors.

Both engines use this (the Ray engine inside each actor's own event loop). A transient error (server gone,
restarting, overloaded, a deadline) is retried with exponential backoff; when the retries run out the run stops
with BatchServerError, and the finished ranges stay. Any other error is the model's answer to some rows: the
batch is split in halves until the rows that fail are alone, and each of those goes to _errors with the
server's message, so one bad row does not cost its batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repoforge import lazy
from repoforge.batch.model import BatchServerError, ModelInfo
from repoforge.triton.client import InferenceServerException, SystemSharedMemory, async_client, is_local_server

Protocol = Literal["grpc", "http"]

_TRANSIENT_GRPC = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.ABORTED",
    "StatusCode.CANCELLED",
}
_TRANSIENT_HTTP = {"429", "502", "503", "504"}
#: Server-wide states that say nothing about the rows (a restart: the model is not loaded yet).
_TRANSIENT_WORDS = (
    "not ready",
    "unknown model",
    "is not found",
    "unavailable",
    "connection",
    "socket closed",
    "timed out",
)


#: Rows refused one by one, with none scored, after which the run stops instead of halving every batch.
REFUSED_BEFORE_STOP = 64


@dataclass(frozen=True)
class ScoreOptions:
    batch_size: int = 256
    concurrency: int = 4
    retries: int = 8
    backoff_s: float = 0.25
    backoff_max_s: float = 8.0
    timeout_s: float = 60.0
    shared_memory: bool = False  # tensors through system shared memory when the server is on this host


def is_transient(exc: BaseException) -> bool:
    """Whether an error is the server's state (retry) rather than its answer to these rows."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        if status in _TRANSIENT_GRPC or status in _TRANSIENT_HTTP:
            return True
        return any(w in str(exc.message() or "").lower() for w in _TRANSIENT_WORDS)
    try:
        return isinstance(exc, lazy.aiohttp().ClientError)
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        return False


def _message(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        text = str(exc.message() or exc)
    else:
        text = str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


#: Bytes each tensor's place in a shared-memory slot is rounded up to (a cache line).
_ALIGN = 64


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _output_shape(result: Any, name: str) -> tuple[int, ...]:
    """An output's shape from either protocol's result (gRPC: a message, HTTP: a dict)."""
    out = result.get_output(name)
    if out is None:
        return ()
    shape = out["shape"] if isinstance(out, dict) else out.shape
    return tuple(int(d) for d in shape)


class _Client:
    """tritonclient's asyncio client of either protocol behind one `infer(arrays) -> outputs`.

    With `shared_memory` and a server on this host, tensors travel through one region of system shared memory,
    made and registered once and cut into one slot per request in flight, each sized for the largest batch:
    for a small model the fixed work per batch (tensors (de)serialised through gRPC on both sides) is most of
    its cost. Remote servers, tensors of variable size and a registration the server refuses use plain
    requests, said once through `say`."""

    def __init__(
        self,
        protocol: Protocol,
        url: str,
        info: ModelInfo,
        timeout_s: float,
        concurrency: int,
        *,
        batch_rows: int = 1,
        shared_memory: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.url = url
        self.info = info
        self.timeout_s = timeout_s
        self._mod, self._client = async_client(protocol, url, timeout_s, concurrency)
        self._say = say or (lambda _m: None)
        self._shm: SystemSharedMemory | None = None
        self._shm_todo = shared_memory  # tried at the first request (registering needs the event loop)
        self._shm_lock = asyncio.Lock()
        self._shm_generation = 0  # registrations so far: a request that finds its region gone re-registers once
        self._rows = batch_rows
        self._concurrency = max(concurrency, 1)
        self._slot = 0
        self._in_at: dict[str, tuple[int, int]] = {}  # name -> (offset in the slot, bytes reserved)
        self._out_at: dict[str, tuple[int, int]] = {}
        self._free: list[int] = []
        self.shared_memory_note = ""  # why plain requests, when shared memory was asked for
        self.used_shared_memory = False  # whether requests went through a registered region (stays after close)

    def _plan_shm(self) -> str:
        """Lay out one slot (every input, then every output, for `batch_rows` rows); the reason it cannot be."""
        batched = self.info.max_batch_size > 0
        at = 0
        for group, layout in ((self.info.inputs, self._in_at), (self.info.outputs, self._out_at)):
            for spec in group:
                if spec.datatype == "BYTES":
                    return f"{spec.name!r} is a BYTES tensor"
                if spec.size < 0:
                    return f"{spec.name!r} has a variable dimension {list(spec.dims)}"
                nbytes = spec.size * spec.np_dtype.itemsize * (self._rows if batched else 1)
                layout[spec.name] = (at, nbytes)
                at += _aligned(max(nbytes, 1))
        self._slot = at
        return ""

    async def _open_shm(self) -> None:
        self._shm_todo = False
        why = "" if is_local_server(self.url) else f"the server at {self.url} is not on this host"
        why = why or self._plan_shm()
        if not why:
            try:
                self._shm = SystemSharedMemory(self._slot * self._concurrency, prefix="repoforge_batch")
            except OSError as exc:
                why = f"no shared memory region of {self._slot * self._concurrency:,} bytes ({exc})"
        if self._shm is not None:
            try:
                await self._shm.register(self._client, self.protocol, self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any refusal means: plain requests
                self._close_shm()
                why = f"the server did not register it ({_message(exc)})"
            else:
                self.used_shared_memory = True
                self._shm_generation += 1
                self._free = list(range(self._concurrency))
        if why:
            self.shared_memory_note = why
            self._say(f"system shared memory not used, plain {self.protocol} requests instead: {why}")

    def _close_shm(self) -> None:
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.destroy()

    async def _reregister(self, generation: int) -> None:
        """The server lost the region (it restarted): register it again, once for all requests that saw so."""
        async with self._shm_lock:
            if self._shm is None or generation != self._shm_generation:
                return
            await self._shm.unregister(self._client, self.protocol, min(self.timeout_s, 5.0))
            await self._shm.register(self._client, self.protocol, self.timeout_s)
            self._shm_generation += 1

    async def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._shm_todo:
            async with self._shm_lock:
                if self._shm_todo:
                    await self._open_shm()
        if self._shm is not None and self._free and self._fits(arrays):
            slot = self._free.pop()
            try:
                generation = self._shm_generation
                try:
                    return await self._infer(arrays, slot)
                except InferenceServerException as exc:
                    if "shared memory" not in str(exc.message() or "").lower():
                        raise
                await self._reregister(generation)
                return await self._infer(arrays, slot)
            finally:
                self._free.append(slot)
        return await self._infer(arrays, None)

    def _fits(self, arrays: dict[str, np.ndarray]) -> bool:
        """Whether every input fits its place in a slot (else this request goes plain)."""
        batched = self.info.max_batch_size > 0
        return all((a.nbytes if batched else a[0].nbytes) <= self._in_at.get(k, (0, -1))[1] for k, a in arrays.items())

    async def _infer(self, arrays: dict[str, np.ndarray], slot: int | None) -> dict[str, np.ndarray]:
        shm = self._shm if slot is not None else None
        base = (slot or 0) * self._slot
        batched = self.info.max_batch_size > 0
        inputs = []
        for spec in self.info.inputs:
            if spec.name not in arrays:  # an optional input nobody mapped
                continue
            arr = arrays[spec.name] if batched else arrays[spec.name][0]
            ii = self._mod.InferInput(spec.name, list(arr.shape), spec.datatype)
            if shm is not None:
                offset = base + self._in_at[spec.name][0]
                ii.set_shared_memory(shm.name, shm.write(offset, np.ascontiguousarray(arr)), offset)
            elif self.protocol == "http":
                ii.set_data_from_numpy(arr, binary_data=True)
            else:
                ii.set_data_from_numpy(arr)
            inputs.append(ii)
        wanted = []
        for o in self.info.outputs:
            ro = (
                self._mod.InferRequestedOutput(o.name, binary_data=True)
                if self.protocol == "http"
                else self._mod.InferRequestedOutput(o.name)
            )
            if shm is not None:
                offset, nbytes = self._out_at[o.name]
                ro.set_shared_memory(shm.name, nbytes, base + offset)
            wanted.append(ro)
        kwargs: dict[str, Any] = {"model_version": self.info.version, "outputs": wanted}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
            result = await self._client.infer(self.info.name, inputs, **kwargs)
        else:
            result = await asyncio.wait_for(self._client.infer(self.info.name, inputs, **kwargs), self.timeout_s)
        out = {}
        for o in self.info.outputs:
            if shm is not None:
                value = shm.read(base + self._out_at[o.name][0], _output_shape(result, o.name), o.np_dtype)
            else:
                value = result.as_numpy(o.name)
            if value is None:
                raise BatchServerError(f"model '{self.info.name}' answered without output {o.name!r}")
            out[o.name] = value if batched else value[None]
        return out

    async def close(self) -> None:
        """Unregister and destroy the region (also after an error or Ctrl-C), then close the connection."""
        try:
            if self._shm is not None:
                await self._shm.unregister(self._client, self.protocol, min(self.timeout_s, 5.0))
        finally:
            self._close_shm()
            await self._client.close()


class Scorer:
    """Scores input arrays in batches of `batch_size`, at most `concurrency` requests at once."""

    def __init__(
        self,
        protocol: Protocol,
        url: str,
        info: ModelInfo,
        options: ScoreOptions,
        on_rows: Callable[[int], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.info = info
        self.options = options
        self.on_rows = on_rows
        self.retried = 0
        self.requests = 0
        self.scored_rows = 0
        self.refused_rows = 0
        rows = options.batch_size if info.max_batch_size > 0 else 1
        self._client = _Client(
            protocol, url, info, options.timeout_s, options.concurrency,
            batch_rows=rows, shared_memory=options.shared_memory, say=say,
        )  # fmt: skip
        self._slots = asyncio.Semaphore(options.concurrency)

    @property
    def used_shared_memory(self) -> bool:
        return self._client.used_shared_memory

    async def close(self) -> None:
        await self._client.close()

    async def score(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """Outputs for every row (garbage where failed) and {row: reason} for rows the model refused."""
        n = len(next(iter(arrays.values()))) if arrays else 0
        if n == 0:
            return {}, {}
        size = self.options.batch_size if self.info.max_batch_size > 0 else 1
        cuts = list(range(0, n, size))
        results = await asyncio.gather(*(self._rows(arrays, np.arange(s, min(s + size, n))) for s in cuts))
        pieces = [p for r in results for p in r[0]]
        failed = {i: why for r in results for i, why in r[1].items()}
        outputs: dict[str, np.ndarray] = {}
        for idx, out in pieces:
            for name, value in out.items():
                if name not in outputs:
                    outputs[name] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                outputs[name][idx[0] : idx[-1] + 1] = value  # idx: consecutive rows
        return outputs, failed

    async def _rows(
        self, arrays: dict[str, np.ndarray], idx: np.ndarray
    ) -> tuple[list[tuple[np.ndarray, dict[str, np.ndarray]]], dict[int, str]]:
        sub = {k: v[idx[0] : idx[-1] + 1] for k, v in arrays.items()}  # views: idx are consecutive rows
        try:
            out = await self._request(sub)
        except _RowsRefused as refused:
            if len(idx) == 1:
                self.refused_rows += 1
                if self.refused_rows >= REFUSED_BEFORE_STOP and self.scored_rows == 0:
                    # every row refused: the request is wrong (a dtype, a mapping), not the rows; halving it is no use
                    raise BatchServerError(
                        f"model '{self.info.name}' refused each of the first {self.refused_rows} rows, one by one "
                        f"({refused.message}); check --map and the columns' dtypes"
                    ) from None
                return [], {int(idx[0]): f"server error: {refused.message}"}
            half = len(idx) // 2
            left, right = await asyncio.gather(self._rows(arrays, idx[:half]), self._rows(arrays, idx[half:]))
            return left[0] + right[0], {**left[1], **right[1]}
        self.scored_rows += len(idx)
        if self.on_rows is not None:
            self.on_rows(len(idx))
        return [(idx, out)], {}

    async def _request(self, sub: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        o = self.options
        started = time.monotonic()
        last = ""
        for attempt in range(o.retries + 1):
            try:
                async with self._slots:
                    self.requests += 1
                    return await self._client.infer(sub)
            except BatchServerError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into transient (retry) or the rows' own error below
                if not is_transient(exc):
                    raise _RowsRefused(_message(exc)) from None
                last = _message(exc)
            if attempt < o.retries:
                self.retried += 1
                delay = min(o.backoff_max_s, o.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(delay)
        raise BatchServerError(
            f"the server at {self.url} did not answer '{self.info.name}' after {o.retries} retries over "
            f"{time.monotonic() - started:.0f} s (last error: {last})"
        )


class _RowsRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
