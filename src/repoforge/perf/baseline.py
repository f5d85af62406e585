"""Performance regression gate: a baseline JSON and ``compare(report, baseline)``.

A point regresses when its throughput drops by more than the tolerance, or its p99 latency rises by
more than the (p99) tolerance, against the baseline at the same model, protocol and concurrency.

CI machines are noisy and differ in speed, so there is a *relative* mode: the run also measures a
calibration model (e.g. a trivial python model) point by point, and the gate compares
``throughput / calibration throughput`` and ``p99 / calibration p99`` instead of raw numbers. A host
that is uniformly 2x slower then still passes; a model that got slower relative to the same host fails.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from repoforge.output import write_file_atomic

from .analyzer import PerfError
from .report import PerfReport

__all__ = ["FORMAT", "Baseline", "BaselineEntry", "GateResult", "GateRow", "compare", "update_baseline"]

FORMAT = "repoforge-perf-baseline/1"
Mode = Literal["auto", "absolute", "relative"]


def _key(load: float, is_rate: bool) -> str:
    return f"rate={load:g}" if is_rate else f"{load:g}"


@dataclass
class BaselineEntry:
    """Baseline numbers for one model / protocol / concurrency."""

    throughput: float
    p99_ms: float
    #: throughput / the calibration model's throughput in the same run (relative mode), else None.
    throughput_ratio: float | None = None
    #: p99 / the calibration model's p99 in the same run, else None.
    p99_ratio: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineEntry:
        return cls(
            float(data["throughput"]), float(data["p99_ms"]), data.get("throughput_ratio"), data.get("p99_ratio")
        )


@dataclass
class ModelBaseline:
    """One model's baseline: ``points[protocol][load key]``."""

    points: dict[str, dict[str, BaselineEntry]] = field(default_factory=dict)
    calibration_model: str | None = None
    measured: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration_model": self.calibration_model,
            "measured": self.measured,
            "machine": self.machine,
            "settings": self.settings,
            "points": {proto: {k: asdict(e) for k, e in rows.items()} for proto, rows in self.points.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelBaseline:
        return cls(
            points={
                proto: {k: BaselineEntry.from_dict(e) for k, e in rows.items()}
                for proto, rows in data.get("points", {}).items()
            },  # fmt: skip
            calibration_model=data.get("calibration_model"),
            measured=data.get("measured", ""),
            machine=dict(data.get("machine", {})),
            settings=dict(data.get("settings", {})),
        )


def _ratios(report: PerfReport, protocol: str, load: float) -> tuple[float | None, float | None]:
    point = next((p for p in report.points if p.protocol == protocol and p.load == load), None)
    cal = report.calibration_for(protocol, load)
    if point is None or cal is None:
        return None, None
    tr = point.throughput / cal.throughput if cal.throughput > 0 else None
    pr = point.p99_ms / cal.p99_ms if cal.p99_ms > 0 else None
    return tr, pr


@dataclass
class Baseline:
    """``models[name]`` → :class:`ModelBaseline`. Saved as JSON (``save``/``load``)."""

    models: dict[str, ModelBaseline] = field(default_factory=dict)
    updated: str = ""

    def entry(self, model: str, protocol: str, load: float, is_rate: bool = False) -> BaselineEntry | None:
        mb = self.models.get(model)
        return mb.points.get(protocol, {}).get(_key(load, is_rate)) if mb else None

    def set_from_report(self, report: PerfReport, model: str | None = None) -> None:
        """Replace ``model``'s (default: the report's model) entries with the report's points."""
        mb = ModelBaseline(
            calibration_model=report.calibration_model if report.calibration_points else None,
            measured=report.timestamp,
            machine=asdict(report.machine),
            settings=dict(report.settings),
        )
        for p in report.points:
            tr, pr = _ratios(report, p.protocol, p.load) if report.calibration_points else (None, None)
            mb.points.setdefault(p.protocol, {})[_key(p.load, p.request_rate is not None)] = BaselineEntry(
                throughput=p.throughput, p99_ms=p.p99_ms, throughput_ratio=tr, p99_ratio=pr
            )
        self.models[model or report.model] = mb
        self.updated = datetime.now(timezone.utc).isoformat(timespec="seconds")

    @classmethod
    def from_report(cls, report: PerfReport) -> Baseline:
        b = cls()
        b.set_from_report(report)
        return b

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "updated": self.updated,
            "models": {k: v.to_dict() for k, v in sorted(self.models.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        if data.get("format") != FORMAT:
            raise PerfError(f"not a repoforge perf baseline (format {data.get('format')!r}, expected {FORMAT})")
        return cls(models={k: ModelBaseline.from_dict(v) for k, v in data.get("models", {}).items()},
                   updated=data.get("updated", ""))  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise PerfError(f"baseline {p} does not exist; create it with --update-baseline") from None
        except (OSError, ValueError) as exc:
            raise PerfError(f"cannot read baseline {p}: {exc}") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PerfError(f"baseline {p} is malformed ({exc}); recreate it with --update-baseline") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file in the same directory + rename)."""
        p = Path(path).absolute()
        return write_file_atomic(p, json.dumps(self.to_dict(), indent=2) + "\n")


def update_baseline(path: str | os.PathLike[str], report: PerfReport, *, model: str | None = None) -> Baseline:
    """Set the report's model (or ``model``) in the baseline at ``path`` (created if missing; other
    models are kept) and save it atomically."""
    p = Path(path)
    baseline = Baseline.load(p) if p.exists() else Baseline()
    baseline.set_from_report(report, model)
    baseline.save(p)
    return baseline


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------
@dataclass
class GateRow:
    model: str
    protocol: str
    load: float
    metric: str  # "throughput" | "p99"
    baseline: float | None
    current: float | None
    #: current / baseline - 1 (None when either side is missing).
    change: float | None
    #: The allowed change: -tolerance for throughput, +p99 tolerance for p99.
    limit: float
    #: "ok" | "regression" | "new" (no baseline to compare with) | "no calibration" | "missing" (in the
    #: baseline, not measured by this run)
    status: str
    unit: str = ""
    is_rate: bool = False

    @property
    def regressed(self) -> bool:
        return self.status == "regression"


@dataclass
class GateResult:
    model: str
    baseline_model: str
    mode: Literal["absolute", "relative"]
    tolerance: float
    p99_tolerance: float
    rows: list[GateRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: baseline points this run did not measure (status "missing"; kept apart from `rows`, the compared points)
    missing_rows: list[GateRow] = field(default_factory=list)
    #: whether the missing points may leave the gate (else they fail it)
    allow_missing: bool = False

    @property
    def regressions(self) -> list[GateRow]:
        return [r for r in self.rows if r.regressed]

    @property
    def missing(self) -> list[str]:
        """Baseline points (protocol and load) this run did not measure, each once."""
        return list(dict.fromkeys(_point(r) for r in self.missing_rows))

    @property
    def passed(self) -> bool:
        return not self.regressions and (self.allow_missing or not self.missing)

    def summary(self) -> str:
        against = self.baseline_model if self.baseline_model == self.model else f"{self.baseline_model}'s baseline"
        what = (
            f"{self.model} vs {against} ({self.mode}, throughput -{self.tolerance:.0%}, p99 +{self.p99_tolerance:.0%})"
        )
        missing = ", ".join(self.missing)
        if self.passed:
            checked = sum(r.status == "ok" for r in self.rows)
            left = f"; not measured this run, allowed by --allow-missing: {missing}" if missing else ""
            return f"perf gate passed: {what}, {checked} checks{left}"
        why = []
        if self.regressions:
            names = ", ".join(
                f"{r.model} {r.protocol} {'rate' if r.is_rate else 'c'}={r.load:g} {r.metric}" for r in self.regressions
            )
            why.append(f"{len(self.regressions)} regression(s): {names}")
        if missing:
            why.append(
                f"{len(self.missing)} baseline point(s) this run did not measure: {missing} (measure them, "
                "or pass --allow-missing to gate only what was measured)"
            )
        return f"perf gate FAILED: {what}: " + "; ".join(why)

    def format_table(self, only_regressions: bool = False, verdict: bool = True) -> str:
        """The rows as a text table, headed by :meth:`summary` unless ``verdict`` is False (the CLI prints
        the verdict once, on its own line)."""
        rows = self.regressions if only_regressions else self.rows + self.missing_rows
        head = ["model", "protocol", "load", "metric", "baseline", "current", "change", "limit", "result"]

        def fmt(v: float | None) -> str:
            return "–" if v is None else (f"{v:.3f}" if self.mode == "relative" else f"{v:,.2f}")

        body = []
        for r in rows:
            body.append([
                r.model if r.model == self.baseline_model else f"{r.model} (vs {self.baseline_model})",
                r.protocol,
                f"rate {r.load:g}" if r.is_rate else f"c={r.load:g}",
                f"{r.metric} ({r.unit})" if r.unit else r.metric,
                fmt(r.baseline),
                fmt(r.current),
                "–" if r.change is None else f"{r.change:+.1%}",
                f"{r.limit:+.0%}",
                r.status.upper() if r.regressed or (r.status == "missing" and not self.allow_missing) else r.status,
            ])  # fmt: skip
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = [line(head), line(["-" * w for w in widths])] + [line(row) for row in body]
        return "\n".join([*([self.summary()] if verdict else []), *out, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "baseline_model": self.baseline_model,
            "mode": self.mode,
            "tolerance": self.tolerance,
            "p99_tolerance": self.p99_tolerance,
            "rows": [asdict(r) for r in self.rows],
            "missing": self.missing,
            "missing_rows": [asdict(r) for r in self.missing_rows],
            "allow_missing": self.allow_missing,
            "notes": list(self.notes),
        }


def _point(r: GateRow) -> str:
    return f"{r.protocol} {'rate ' if r.is_rate else 'c='}{r.load:g}"


def compare(
    current: PerfReport,
    baseline: Baseline,
    tolerance: float = 0.15,
    *,
    p99_tolerance: float | None = None,
    baseline_model: str | None = None,
    mode: Mode = "auto",
    allow_missing: bool = False,
) -> GateResult:
    """Gate ``current`` against ``baseline``'s entries for ``baseline_model`` (default: the same model).

    Throughput regresses when ``current < baseline * (1 - tolerance)``; p99 when
    ``current > baseline * (1 + p99_tolerance)`` (default: ``tolerance``). ``mode="relative"`` compares
    the ratios to the calibration model (both the baseline and the report must have them);
    ``"auto"`` uses relative mode when both do. Points without a baseline entry are listed as "new"; baseline
    points this run did not measure are listed as "missing" and fail the gate unless ``allow_missing``.
    """
    if tolerance < 0 or (p99_tolerance is not None and p99_tolerance < 0):
        raise PerfError("tolerances must be >= 0 (0.15 = 15 %)")
    if mode not in ("auto", "absolute", "relative"):
        raise PerfError(f"mode must be auto, absolute or relative, not {mode!r}")
    p99_tol = tolerance if p99_tolerance is None else p99_tolerance
    name = baseline_model or current.model
    mb = baseline.models.get(name)
    if mb is None:
        have = ", ".join(sorted(baseline.models)) or "none"
        raise PerfError(
            f"the baseline has no entry for model {name} (it has: {have}); record one with --update-baseline"
        )
    notes: list[str] = []
    can_relative = bool(mb.calibration_model and current.calibration_points
                        and current.calibration_model == mb.calibration_model)  # fmt: skip
    if mode == "relative" and not can_relative:
        if not current.calibration_points:
            raise PerfError("relative mode needs a calibration model measured in this run; pass --calibration-model")
        if not mb.calibration_model:
            raise PerfError(
                f"the baseline for {name} has no calibration ratios; re-record it with --calibration-model --update-baseline"
            )
        raise PerfError(
            f"calibration models differ: this run used {current.calibration_model}, the baseline {mb.calibration_model}"
        )
    relative = mode == "relative" or (mode == "auto" and can_relative)
    if mode == "auto" and not relative and (mb.calibration_model or current.calibration_points):
        notes.append(
            "note: comparing absolute numbers (the run and the baseline do not both have the same calibration model)"
        )
    result = GateResult(
        current.model, name, "relative" if relative else "absolute", tolerance, p99_tol, notes=notes,
        allow_missing=allow_missing,
    )  # fmt: skip

    for proto in current.protocols:
        for p in current.points_for(proto):
            is_rate = p.request_rate is not None
            entry = mb.points.get(proto, {}).get(_key(p.load, is_rate))
            if relative:
                cur_t, cur_p = _ratios(current, proto, p.load)
                base_t = entry.throughput_ratio if entry else None
                base_p = entry.p99_ratio if entry else None
                unit_t = unit_p = f"× {mb.calibration_model}"
            else:
                cur_t, cur_p = p.throughput, p.p99_ms
                base_t = entry.throughput if entry else None
                base_p = entry.p99_ms if entry else None
                unit_t, unit_p = "infer/s", "ms"
            for metric, base, cur, limit, unit in (("throughput", base_t, cur_t, -tolerance, unit_t),
                                                   ("p99", base_p, cur_p, p99_tol, unit_p)):  # fmt: skip
                if entry is None:
                    status, change = "new", None
                elif base is None or cur is None or base <= 0:
                    status, change = "no calibration" if relative else "new", None
                else:
                    change = cur / base - 1.0
                    bad = change < -tolerance if metric == "throughput" else change > p99_tol
                    status = "regression" if bad else "ok"
                result.rows.append(
                    GateRow(current.model, proto, p.load, metric, base, cur, change, limit, status, unit, is_rate)
                )
    measured = {(p.protocol, _key(p.load, p.request_rate is not None)) for p in current.points}
    for proto, entries in sorted(mb.points.items()):
        for key, entry in entries.items():
            if (proto, key) in measured:
                continue
            is_rate = key.startswith("rate=")
            load = float(key.removeprefix("rate="))
            base_t = entry.throughput_ratio if relative else entry.throughput
            base_p = entry.p99_ratio if relative else entry.p99_ms
            unit_t, unit_p = (f"× {mb.calibration_model}",) * 2 if relative else ("infer/s", "ms")
            for metric, base, limit, unit in (("throughput", base_t, -tolerance, unit_t),
                                              ("p99", base_p, p99_tol, unit_p)):  # fmt: skip
                result.missing_rows.append(
                    GateRow(current.model, proto, load, metric, base, None, None, limit, "missing", unit, is_rate)
                )
    if not any(r.status in ("ok", "regression") for r in result.rows):
        result.notes.append(
            f"note: no point of this run has a baseline entry for {name} (different protocols or concurrencies?)"
        )
    return result
