"""The release loop: canary steps or a blue-green switch, one check per interval, rollback on `threshold` failures.

Judged like Flagger (a check per interval, rolled back after `threshold` failed checks; no data is a failed check,
never a pass) on what users of a model care about beyond HTTP: the candidate's errors and p99 as the router sees
them and, before any traffic, the agreement of its shadow answers with the primary's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repoforge.rollout.server import RouterServer, ServerError
from repoforge.rollout.window import Window
from repoforge.spec.rollout import RolloutSpec

Say = Callable[[str], None]

PROMOTED, ROLLED_BACK = 0, 1
INTERRUPTED = 130  # Ctrl-C, as every other command: the candidate was rolled back first


@dataclass
class Check:
    """One interval's verdict: the figures and, when it failed, why (metric and threshold)."""

    phase: str  # "shadow", "step", "green"
    weight: float  # the candidate's percent of the traffic during the interval
    window: Window
    failures: list[str] = field(default_factory=list)
    #: whether this interval measured agreement: only a shadow phase does. During a step the router also mirrors
    #: the rows it sent to the candidate onto the candidate itself, so the counters would track its traffic share.
    agreement: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class RolloutResult:
    """How the release ended: exit code 0 promoted, 1 rolled back, with the reason and every check."""

    outcome: str  # "promoted" | "rolled back" | "incomplete" (switched, but blue could not be unloaded)
    reason: str
    candidate: str
    weights: dict[str, float]
    checks: list[dict[str, Any]] = field(default_factory=list)
    switch_ms: float | None = None  # how long the last weight change took to be confirmed (rollback, switch)
    interrupted: bool = False  # Ctrl-C ended it (after rolling the candidate back)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return INTERRUPTED
        return PROMOTED if self.outcome == "promoted" else ROLLED_BACK

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "candidate": self.candidate,
            "weights": self.weights,
            "checks": self.checks,
            "switch_ms": self.switch_ms,
        }


def judge(policy: RolloutSpec, w: Window, *, traffic: bool, agreement: bool) -> list[str]:
    """Why the interval failed (empty: it passed). No data fails, so a candidate nobody calls is never promoted."""
    out = []
    if traffic:
        # figures over too few requests still count against the candidate (a slow one gets fewer), never for it
        rate = w.error_rate or 0.0
        if rate > policy.max_error_rate:
            out.append(f"error rate {rate:.2%} > --max-error-rate {policy.max_error_rate:.2%}")
        if policy.max_p99_ms is not None and w.p99_ms is not None and w.p99_ms > policy.max_p99_ms:
            out.append(f"p99 {w.p99_ms:.1f} ms > --max-p99-ms {policy.max_p99_ms:g}")
        if w.requests < policy.min_requests:
            out.append(f"no data: {w.requests} requests < --min-requests {policy.min_requests}")
    if agreement:
        if w.shadow_rows < policy.min_requests:
            out.append(f"no data: {w.shadow_rows} shadow rows < --min-requests {policy.min_requests}")
        elif w.agreement is not None and w.agreement < policy.min_agreement:
            out.append(f"agreement {w.agreement:.2%} < --min-agreement {policy.min_agreement:.2%}")
    return out


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


class Rollout:
    """One release of `candidate` behind `server`'s router, with its log."""

    def __init__(
        self,
        server: RouterServer,
        candidate: str,
        policy: RolloutSpec,
        *,
        say: Say,
        log: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server
        self.candidate = candidate
        self.policy = policy
        self.say = say
        self.log = log
        self.sleep = sleep
        self.checks: list[dict[str, Any]] = []
        self.failed = 0
        self.switch_ms: float | None = None
        self.base = base_weights(server, candidate)

    # -- weights -----------------------------------------------------------------------------------------
    def shares(self, percent: float) -> dict[str, float]:
        """The candidate at `percent`, the other routes sharing the rest by their spec weights."""
        rest = 1.0 - percent / 100.0
        out = {n: rest * w for n, w in self.base.items()}
        out[self.candidate] = percent / 100.0
        return out

    def _set(self, percent: float) -> dict[str, float]:
        w = self.shares(percent)
        self.server.set_weights(w)
        return w

    # -- one interval -----------------------------------------------------------------------------------
    def _interval(self, phase: str, percent: float, *, traffic: bool, agreement: bool) -> Check:
        before = self.server.counters(self.candidate)
        self.sleep(self.policy.interval_s)
        w = Window.between(before, self.server.counters(self.candidate))
        check = Check(phase, percent, w, judge(self.policy, w, traffic=traffic, agreement=agreement), agreement)
        if not check.ok:
            self.failed += 1
        self._record(check)
        return check

    def _record(self, check: Check, **extra: Any) -> None:
        w = check.window
        verdict = "pass" if check.ok else "fail: " + "; ".join(check.failures)
        row = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "candidate": self.candidate,
            "phase": check.phase,
            "weight_percent": check.weight,
            "weights": {k: round(v, 6) for k, v in self.shares(check.weight).items()},
            **asdict(w),
            **({} if check.agreement else {"agreement": None, "shadow_rows": None}),  # not measured here
            "error_rate": w.error_rate,
            "failed_checks": self.failed,
            "threshold": self.policy.threshold,
            "verdict": verdict,
            **extra,
        }
        self.checks.append(row)
        self._append(row)
        shares = " ".join(f"{k}={v:.2f}" for k, v in self.shares(check.weight).items())
        agreement = f"  agreement {_fmt(w.agreement, '.2%')} of {w.shadow_rows} shadow rows" if check.agreement else ""
        self.say(
            f"{check.phase:6} {shares}  requests {w.requests:6d}  errors {_fmt(w.error_rate, '.2%')}"
            f"  p99 {_fmt(w.p99_ms, '.1f', ' ms')}{agreement}"
            f"  {verdict} ({self.failed}/{self.policy.threshold} failed)"
        )

    def _append(self, row: dict[str, Any]) -> None:
        if self.log is None:
            return
        with self.log.open("a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()

    def _end(
        self, outcome: str, reason: str, weights: dict[str, float], switch_ms: float | None = None
    ) -> RolloutResult:
        switch_ms = switch_ms if switch_ms is not None else self.switch_ms
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "outcome": outcome, "reason": reason}
        self._append({**row, "weights": weights, **({"switch_ms": round(switch_ms, 1)} if switch_ms else {})})
        self.say(f"{outcome}: {reason}" + (f" (weights taken in {switch_ms:.0f} ms)" if switch_ms else ""))
        return RolloutResult(outcome, reason, self.candidate, weights, self.checks, switch_ms)

    def _timed_set(self, percent: float) -> tuple[dict[str, float], float]:
        """Weights set and confirmed by the router's gauges, and how long that took (a rollback's delay)."""
        t0 = time.perf_counter()
        w = self._set(percent)
        self.switch_ms = (time.perf_counter() - t0) * 1000
        return w, self.switch_ms

    def _rollback(self, check: Check) -> RolloutResult:
        w, ms = self._timed_set(0.0)
        where = "before any traffic" if check.weight == 0 else f"at {check.weight:g}%"
        return self._end("rolled back", f"{self.candidate} {where}: " + "; ".join(check.failures), w, ms)

    def _shadowed(self) -> bool:
        sh = self.server.plugin.shadow
        return sh is not None and sh.model == self.candidate

    def run(self, smoke: Callable[[str], None]) -> RolloutResult:
        """The policy's strategy; Ctrl-C before the end rolls the candidate back (the safe state) and says so."""
        try:
            return self.canary() if self.policy.strategy == "canary" else self.blue_green(smoke)
        except KeyboardInterrupt:
            w, ms = self._timed_set(0.0)
            result = self._end("rolled back", f"{self.candidate}: interrupted, all traffic back", w, ms)
            result.interrupted = True
            return result

    # -- canary -------------------------------------------------------------------------------------------
    def canary(self) -> RolloutResult:
        p = self.policy
        if self._shadowed():
            self._set(0.0)
            self.say(f"shadow {self.candidate} before any traffic ({p.interval} per check)")
            while True:
                check = self._interval("shadow", 0.0, traffic=False, agreement=True)
                if check.ok:
                    break
                if self.failed >= p.threshold:
                    return self._rollback(check)
        else:
            self.say(f"no shadow of {self.candidate} on router '{self.server.router}': agreement is not checked")
        for step in p.steps:
            self._set(step)
            while True:
                check = self._interval("step", step, traffic=True, agreement=False)
                if check.ok:
                    break
                if self.failed >= p.threshold:
                    return self._rollback(check)
        return self._end("promoted", f"{self.candidate} passed every step to 100%", self.shares(100.0))

    # -- blue-green ---------------------------------------------------------------------------------------
    def blue_green(self, smoke: Callable[[str], None]) -> RolloutResult:
        p = self.policy
        blue = [n for n, w in self.base.items() if w > 0]
        if not self.server.ready(self.candidate):
            self.say(f"loading green: {self.candidate}")
            try:
                self.server.load(self.candidate)
            except ServerError as exc:
                return self._end("rolled back", f"green {self.candidate} did not load: {exc}", self.shares(0.0))
        try:
            smoke(self.candidate)
        except ServerError as exc:
            return self._end("rolled back", f"green {self.candidate} failed its smoke request: {exc}", self.shares(0.0))
        self.say(f"green {self.candidate} answered its smoke request")
        wanted = p.shadow_requests if p.shadow_requests is not None else (100 if self._shadowed() else 0)
        if wanted:
            result = self._shadow_green(wanted)
            if result is not None:
                return result
        _, ms = self._timed_set(100.0)
        self.say(
            f"switched all traffic in {ms:.0f} ms to green {self.candidate}; blue ({', '.join(blue)}) stays loaded {p.keep_blue}"
        )
        deadline = time.monotonic() + p.keep_blue_s
        while time.monotonic() + p.interval_s <= deadline:
            check = self._interval("green", 100.0, traffic=True, agreement=False)
            if not check.ok and self.failed >= p.threshold:
                w, ms = self._timed_set(0.0)
                why = f"green {self.candidate} after the switch: " + "; ".join(check.failures)
                return self._end("rolled back", why, w, ms)
        stuck = []
        for b in blue:
            try:
                self.server.unload(b)
                self.say(f"unloaded blue: {b}")
            except ServerError as exc:
                self.say(f"blue {b} stays loaded: {exc}")
                stuck.append(f"{b} ({exc})")
        if stuck:  # traffic is on green, but the release did not finish: not a success to report or to exit 0 on
            return self._end(
                "incomplete",
                f"all traffic on green {self.candidate}, but blue could not be unloaded: {'; '.join(stuck)}; unload "
                "it by hand once the server allows it, or send traffic back with --rollback",
                self.shares(100.0),
            )
        return self._end("promoted", f"all traffic on green {self.candidate}", self.shares(100.0))

    def _shadow_green(self, wanted: int) -> RolloutResult | None:
        """Shadow rows until `wanted` are seen (at most `threshold` intervals without reaching it), then judge
        their agreement once. None: passed."""
        p = self.policy
        self._set(0.0)
        start = self.server.counters(self.candidate)
        w = Window.between(start, start)
        for _ in range(p.threshold):
            self.sleep(p.interval_s)
            w = Window.between(start, self.server.counters(self.candidate))
            if w.shadow_rows >= wanted:
                break
        failures = []
        if w.shadow_rows < wanted:
            failures.append(f"no data: {w.shadow_rows} shadow rows < --shadow-requests {wanted}")
        elif w.agreement is not None and w.agreement < p.min_agreement:
            failures.append(f"agreement {w.agreement:.2%} < --min-agreement {p.min_agreement:.2%}")
        check = Check("shadow", 0.0, w, failures, agreement=True)
        if failures:
            self.failed = p.threshold
        self._record(check)
        if failures:
            return self._end(
                "rolled back", f"green {self.candidate} before the switch: " + "; ".join(failures), self.shares(0.0)
            )
        return None


def base_weights(server: RouterServer, candidate: str) -> dict[str, float]:
    """The other routes' shares without the candidate: their spec weights (canary percent excluded), normalized;
    equal shares where the spec gives them none."""
    plugin = server.plugin
    spec = {r.model: r.weight for r in plugin.routes if r.model != candidate}
    if not spec:
        raise ValueError(f"router '{server.router}' has no route besides {candidate} to fall back to")
    total = sum(spec.values())
    return {n: (w / total if total > 0 else 1 / len(spec)) for n, w in spec.items()}


def rollback(server: RouterServer, candidate: str | None, say: Say) -> dict[str, float]:
    """All traffic back, at once: to the router's spec weights (what it had before any release), with
    `candidate` at 0 where one is named; routes that need traffic and were unloaded (blue) are loaded first."""
    if candidate is None:
        weights = dict(zip(server.route_names, server.plugin.initial_weights(), strict=True))
    else:
        weights = {**base_weights(server, candidate), candidate: 0.0}
    for name, w in weights.items():
        if w > 0 and not server.ready(name):
            say(f"loading {name}")
            server.load(name)
    server.set_weights(weights)
    say("weights now " + ", ".join(f"{k}={v:.2f}" for k, v in weights.items()))
    return weights
