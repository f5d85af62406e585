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

from repoforge.batch.model import BatchServerError, ModelInfo
from repoforge.triton.client import InferenceServerException, async_client

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
        import aiohttp

        return isinstance(exc, aiohttp.ClientError)
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        return False


def _message(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        text = str(exc.message() or exc)
    else:
        text = str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class _Client:
    """tritonclient's asyncio client of either protocol behind one `infer(arrays) -> outputs`."""

    def __init__(self, protocol: Protocol, url: str, info: ModelInfo, timeout_s: float, concurrency: int) -> None:
        self.protocol = protocol
        self.info = info
        self.timeout_s = timeout_s
        self._mod, self._client = async_client(protocol, url, timeout_s, concurrency)

    async def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = self.info.max_batch_size > 0
        inputs = []
        for spec in self.info.inputs:
            if spec.name not in arrays:  # an optional input nobody mapped
                continue
            arr = arrays[spec.name] if batched else arrays[spec.name][0]
            ii = self._mod.InferInput(spec.name, list(arr.shape), spec.datatype)
            if self.protocol == "http":
                ii.set_data_from_numpy(arr, binary_data=True)
            else:
                ii.set_data_from_numpy(arr)
            inputs.append(ii)
        wanted = [
            self._mod.InferRequestedOutput(o.name, binary_data=True)
            if self.protocol == "http"
            else self._mod.InferRequestedOutput(o.name)
            for o in self.info.outputs
        ]
        kwargs: dict[str, Any] = {"model_version": self.info.version, "outputs": wanted}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
            result = await self._client.infer(self.info.name, inputs, **kwargs)
        else:
            result = await asyncio.wait_for(self._client.infer(self.info.name, inputs, **kwargs), self.timeout_s)
        out = {}
        for o in self.info.outputs:
            value = result.as_numpy(o.name)
            if value is None:
                raise BatchServerError(f"model '{self.info.name}' answered without output {o.name!r}")
            out[o.name] = value if batched else value[None]
        return out

    async def close(self) -> None:
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
    ) -> None:
        self.url = url
        self.info = info
        self.options = options
        self.on_rows = on_rows
        self.retried = 0
        self.requests = 0
        self.scored_rows = 0
        self.refused_rows = 0
        self._client = _Client(protocol, url, info, options.timeout_s, options.concurrency)
        self._slots = asyncio.Semaphore(options.concurrency)

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
                outputs[name][idx] = value
        return outputs, failed

    async def _rows(
        self, arrays: dict[str, np.ndarray], idx: np.ndarray
    ) -> tuple[list[tuple[np.ndarray, dict[str, np.ndarray]]], dict[int, str]]:
        sub = {k: v[idx] for k, v in arrays.items()}
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
