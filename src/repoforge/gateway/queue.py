"""Asynchronous inference on Redis Streams: accepted work outlives HTTP requests, gateways and workers.

Keys (under `prefix`, default `repoforge:async`):
  `:requests` stream + consumer group `workers`   accepted requests; a message is deleted once its id is answered
  `:delayed`  sorted set (score = due time, ms)    retries waiting out their jittered backoff
  `:dead`     stream                               dead letters: id, model, body, reason, deliveries
  `:job:<id>` hash                                 a pending id (model, submitted); gone once answered
  `:result:<id>` string, expires after result_ttl  {"status": "done", "outputs"} | {"status": "failed", "reason"}
  `:stats`    hash                                 per-outcome counts (submitted, done, failed, retried, ...)

Nothing is lost in between: submitting is one MULTI (job + XADD) before the 202; answering, retrying and
dead-lettering are each one Lua script that writes the result with SET NX (so an id is answered exactly once,
whoever gets there first) and acknowledges the message in the same step. A worker killed mid-request leaves its
message pending; another worker takes it over with XAUTOCLAIM once it has been idle for the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from repoforge.gateway.catalog import Catalog
from repoforge.gateway.codec import outputs_v2, parse_v2
from repoforge.gateway.upstream import UpstreamTimeout, infer, unavailable

log = logging.getLogger("repoforge.gateway.queue")

GROUP = "workers"
OUTCOMES = ("submitted", "done", "failed", "retried", "dead_lettered", "claimed", "timeouts", "unavailable",
            "callback_failed")  # fmt: skip

_ANSWER = """
-- KEYS: result, requests, job, stats, dead   ARGV: value, ttl, group, message id, outcome, dead fields (JSON or '')
local written = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
redis.call('XACK', KEYS[2], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
if not written then return 0 end
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
if ARGV[6] ~= '' then
  local f = cjson.decode(ARGV[6])
  local flat = {}
  for k, v in pairs(f) do table.insert(flat, k); table.insert(flat, tostring(v)) end
  redis.call('XADD', KEYS[5], '*', unpack(flat))
  redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
end
return 1
"""

_RETRY = """
-- KEYS: delayed, requests, stats, result   ARGV: due ms, member (JSON fields), group, message id
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('XACK', KEYS[2], ARGV[3], ARGV[4]); redis.call('XDEL', KEYS[2], ARGV[4]); return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('XACK', KEYS[2], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'retried', 1)
return 1
"""

_PROMOTE = """
-- KEYS: delayed, requests   ARGV: now ms, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  local f = cjson.decode(m)
  local flat = {}
  for k, v in pairs(f) do table.insert(flat, k); table.insert(flat, tostring(v)) end
  redis.call('XADD', KEYS[2], '*', unpack(flat))
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""


@dataclass
class QueueSettings:
    """How the queue behaves; the same on every gateway and worker sharing `prefix`."""

    redis_url: str
    prefix: str = "repoforge:async"
    timeout_s: float = 60.0  # per delivery
    max_deliveries: int = 3
    visibility_timeout_s: float = 90.0  # idle time after which a pending message is taken over
    result_ttl_s: int = 86400
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"


def backoff(settings: QueueSettings, attempt: int) -> float:
    """Exponential backoff with full jitter (0.5x to 1.5x), so retries of a burst do not arrive together."""
    base = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** max(0, attempt - 1))
    return base * random.uniform(0.5, 1.5)


def connect(url: str) -> Any:
    return aredis.Redis.from_url(url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5)


class AsyncQueue:
    """Submitting and reading ids (the gateway) and the queue's state for /metrics."""

    def __init__(self, settings: QueueSettings, redis: Any) -> None:
        self.s = settings
        self.redis = redis
        self._promote = redis.register_script(_PROMOTE)

    async def promote_due(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Move retries whose backoff is over back into the stream, until `stop`. Workers do it too; the gateway
        does it so that a retry is not stranded when an autoscaler has taken every worker away (scaling on the
        stream's lag would not see it waiting)."""
        while not stop.is_set():
            try:
                await self._promote(keys=[self.s.key("delayed"), self.s.key("requests")],
                                    args=[int(time.time() * 1000), 100])  # fmt: skip
            except Exception:
                log.warning("could not move due retries back into the stream; retrying", exc_info=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.s.key("requests"), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, model: str, body: dict[str, Any], callback: str | None) -> str:
        """Accept a checked request: once this returns, the id is in Redis and will be answered."""
        job_id = uuid.uuid4().hex
        fields = {"id": job_id, "model": model, "body": json.dumps(body), "callback": callback or "",
                  "attempt": "1", "submitted": f"{time.time():.3f}"}  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.s.key(f"job:{job_id}"), mapping={"model": model, "submitted": fields["submitted"]})
            pipe.xadd(self.s.key("requests"), fields)
            pipe.hincrby(self.s.key("stats"), "submitted", 1)
            await pipe.execute()
        return job_id

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """`{"id", "status": "pending" | "done" | "failed", ...}`, None for an unknown (or expired) id."""
        # one MULTI, so both keys are read at one instant: read one after the other, an answer landing between the
        # reads (result set and job deleted together) made a just-answered id look unknown (404)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.s.key(f"result:{job_id}"))
            pipe.hgetall(self.s.key(f"job:{job_id}"))
            raw, job = await pipe.execute()
        if raw is not None:
            result: dict[str, Any] = json.loads(raw)
            return {"id": job_id, **result}
        if job:
            return {"id": job_id, "status": "pending", "model": job.get("model")}
        return None

    async def snapshot(self) -> dict[str, float]:
        """Queue length, consumer lag, pending, delayed, dead letters and the outcome counts, for /metrics."""
        requests = self.s.key("requests")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(requests)
            pipe.xlen(self.s.key("dead"))
            pipe.zcard(self.s.key("delayed"))
            pipe.hgetall(self.s.key("stats"))
            length, dead, delayed, stats = await pipe.execute()
        lag = pending = 0.0
        try:
            for group in await self.redis.xinfo_groups(requests):
                if group.get("name") == GROUP:
                    pending = float(group.get("pending") or 0)
                    lag = float(group["lag"]) if group.get("lag") is not None else max(0.0, length - pending)
        except Exception:  # noqa: BLE001 - no stream yet: nothing queued
            pass
        out = {"length": float(length), "lag": lag, "pending": pending, "delayed": float(delayed), "dead": float(dead)}
        for name in OUTCOMES:
            out[f"outcome_{name}"] = float(stats.get(name, 0))
        return out


def consumer_name() -> str:
    """Unique per process: a restarted worker is a new consumer, and takes over the old one's messages by XAUTOCLAIM."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Takes requests from the stream and answers them through Triton, `concurrency` at a time."""

    def __init__(self, settings: QueueSettings, redis: Any, triton: Any, concurrency: int = 4) -> None:
        self.s = settings
        self.redis = redis
        self.triton = triton
        self.catalog = Catalog(triton)
        self.concurrency = concurrency
        self.name = consumer_name()
        self._answer = redis.register_script(_ANSWER)
        self._retry = redis.register_script(_RETRY)
        self._promote = redis.register_script(_PROMOTE)
        self._http: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; in-flight requests finish (or, if killed, are taken over by others)."""
        await AsyncQueue(self.s, self.redis).ensure_group()
        tasks: set[asyncio.Task[None]] = set()
        claim_every = max(0.2, min(self.s.visibility_timeout_s / 4, 5.0))
        last_claim = 0.0
        requests = self.s.key("requests")
        log.info("worker %s: consuming %s as group %s", self.name, requests, GROUP)
        try:
            while not stop.is_set():
                await self._promote(keys=[self.s.key("delayed"), requests], args=[int(time.time() * 1000), 100])
                free = self.concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch: list[tuple[str, dict[str, str], bool]] = []
                if time.monotonic() - last_claim > claim_every:
                    last_claim = time.monotonic()
                    claimed = await self.redis.xautoclaim(requests, GROUP, self.name,
                                                          int(self.s.visibility_timeout_s * 1000), "0-0", count=free)  # fmt: skip
                    batch += [(mid, fields, True) for mid, fields in claimed[1] if fields]
                if not batch:
                    read = await self.redis.xreadgroup(GROUP, self.name, {requests: ">"}, count=free, block=300)
                    for _stream, messages in read or []:
                        batch += [(mid, fields, False) for mid, fields in messages if fields]
                for mid, fields, was_claimed in batch:
                    task = asyncio.create_task(self._handle(mid, fields, was_claimed))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.wait(tasks, timeout=self.s.timeout_s + 5)
            if self._http is not None:
                await self._http.aclose()

    async def _deliveries(self, mid: str, attempt: int) -> int:
        """Deliveries so far: our own count of requeued attempts plus the times Redis handed this entry out."""
        rows = await self.redis.xpending_range(self.s.key("requests"), GROUP, min=mid, max=mid, count=1)
        times = int(rows[0]["times_delivered"]) if rows else 1
        return attempt + max(0, times - 1)

    async def _handle(self, mid: str, fields: dict[str, str], claimed: bool) -> None:
        job_id = fields.get("id", mid)
        stats = self.s.key("stats")
        try:
            attempt = int(fields.get("attempt", "1"))
            if claimed:
                attempt = await self._deliveries(mid, attempt)
                await self.redis.hincrby(stats, "claimed", 1)
                log.info("worker %s: took over %s (delivery %d)", self.name, job_id, attempt)
            if await self.redis.exists(self.s.key(f"result:{job_id}")):
                await self._write(job_id, mid, None, "", "")  # answered already: only acknowledge
                return
            try:
                model = await self.catalog.get(fields["model"])
                request = parse_v2(model, json.loads(fields["body"]))
                request.id = job_id
                result = await infer(self.triton, request, self.s.timeout_s)
                outputs = {"status": "done", "model_name": model.name, "model_version": model.version,
                           "outputs": outputs_v2(result), "deliveries": attempt}  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered with its reason
                if unavailable(exc):  # Triton away: retried without using up a delivery, never dead-lettered
                    await self.redis.hincrby(stats, "unavailable", 1)
                    await self._fail(job_id, mid, fields, attempt, f"unavailable: {exc}", counts=False)
                    return
                timeout = isinstance(exc, UpstreamTimeout)
                if timeout:
                    await self.redis.hincrby(stats, "timeouts", 1)
                reason = f"{'timeout' if timeout else type(exc).__name__}: {exc}"
                await self._fail(job_id, mid, fields, attempt, reason)
                return
            if await self._write(job_id, mid, outputs, "done", ""):
                await self._callback(fields.get("callback", ""), {"id": job_id, **outputs})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker %s: could not finish %s; it stays pending", self.name, job_id)

    async def _write(self, job_id: str, mid: str, value: dict[str, Any] | None, outcome: str, dead: str) -> bool:
        keys = [self.s.key(f"result:{job_id}"), self.s.key("requests"), self.s.key(f"job:{job_id}"),
                self.s.key("stats"), self.s.key("dead")]  # fmt: skip
        if value is None:  # acknowledge only
            await self.redis.xack(keys[1], GROUP, mid)
            await self.redis.xdel(keys[1], mid)
            return False
        written = await self._answer(keys=keys, args=[json.dumps(value), int(self.s.result_ttl_s), GROUP, mid,
                                                      outcome, dead])  # fmt: skip
        return bool(written)

    async def _fail(
        self, job_id: str, mid: str, fields: dict[str, str], attempt: int, reason: str, counts: bool = True
    ) -> None:
        """Dead-letter after the last delivery, else retry after a backoff (`counts=False`: the delivery is not the
        request's fault, so it is not counted against --max-deliveries)."""
        if counts and attempt >= self.s.max_deliveries:
            log.warning("worker %s: %s dead-lettered after %d deliveries: %s", self.name, job_id, attempt, reason)
            value = {"status": "failed", "reason": reason, "deliveries": attempt}
            dead = json.dumps({"id": job_id, "model": fields.get("model", ""), "body": fields.get("body", ""),
                               "reason": reason, "deliveries": attempt, "message": mid})  # fmt: skip
            if await self._write(job_id, mid, value, "failed", dead):
                await self._callback(fields.get("callback", ""), {"id": job_id, **value})
            return
        delay = backoff(self.s, attempt if counts else 4)  # Triton away: ~4 s apart, not a burst of tries
        next_attempt = attempt + 1 if counts else attempt
        member = json.dumps({**fields, "attempt": str(next_attempt), "last_error": reason, "retry": uuid.uuid4().hex})
        due = int((time.time() + delay) * 1000)
        await self._retry(keys=[self.s.key("delayed"), self.s.key("requests"), self.s.key("stats"),
                                self.s.key(f"result:{job_id}")], args=[due, member, GROUP, mid])  # fmt: skip
        log.info("worker %s: %s failed (delivery %d), retry in %.2f s: %s", self.name, job_id, attempt, delay, reason)

    async def _callback(self, url: str, body: dict[str, Any]) -> None:
        """POST the answer to the caller's URL (3 tries); a failed callback is counted, the result stays readable."""
        if not url:
            return

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        for attempt in range(3):
            try:
                response = await self._http.post(url, json=body)
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5 * (attempt + 1))
        await self.redis.hincrby(self.s.key("stats"), "callback_failed", 1)
        log.warning("callback %s for %s failed 3 times", url, body.get("id"))
