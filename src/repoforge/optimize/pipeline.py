"""One model through `optimize:`: export, variants, gate, timing, selection. Nothing here writes the output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoforge.contract import Device
from repoforge.errors import RepoforgeError
from repoforge.optimize.cache import Cache, key, tool_versions
from repoforge.optimize.data import Arrays, ModelTarget, batch_sizes
from repoforge.optimize.export import export_onnx
from repoforge.optimize.gate import GateResult, judge, run_model, tolerance_for
from repoforge.optimize.runners import NOT_SHIPPED, runtime_of
from repoforge.optimize.tensorrt import plan_tensorrt
from repoforge.optimize.timing import Timing, host, select, time_variants
from repoforge.optimize.variants import CONVERSION_WARNINGS, VariantUnavailable, make_variant
from repoforge.output import sha256_file


@dataclass
class VariantResult:
    """One row of the report."""

    name: str
    accepted: bool
    reason: str
    path: Path | None = None
    sha256: str = ""
    size_bytes: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    gate: GateResult | None = None
    timing: Timing | None = None
    reused: bool = False

    def as_dict(self, sizes: list[int]) -> dict[str, Any]:
        g = self.gate
        t = self.timing
        biggest = sizes[-1]
        return {
            "name": self.name,
            "accepted": self.accepted,
            "reason": self.reason,
            "top1": g.top1 if g else None,
            "agreement": g.agreement if g else None,
            "top1_drop": g.top1_drop if g else None,
            "max_abs_err": g.max_abs_err if g else None,
            "max_rel_err": g.max_rel_err if g else None,
            "tolerance": g.tolerance if g else None,
            "latency_ms": {str(b): t.latency_ms[b][0] for b in sizes} if t else {},
            "latency_range_ms": {str(b): [t.latency_ms[b][1], t.latency_ms[b][2]] for b in sizes} if t else {},
            "throughput": t.throughput(biggest)[0] if t else None,
            "throughput_range": list(t.throughput(biggest)[1:]) if t else None,
            "throughput_batch": biggest,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "shipped_by_build": self.accepted and self.name not in NOT_SHIPPED,
            "note": NOT_SHIPPED.get(self.name, ""),
            "settings": self.settings,
        }


@dataclass
class ModelResult:
    name: str
    selected: str
    why: str
    variants: list[VariantResult]
    batch_sizes: list[int]
    export: dict[str, Any] | None
    host: dict[str, Any]
    tensorrt: dict[str, Any] | None = None

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def accepted(self) -> list[VariantResult]:
        """The variants a build may ship: passed the gate, and served by what the build writes."""
        return [v for v in self.variants if v.accepted and v.name not in NOT_SHIPPED and v.path is not None]


Say = Callable[[str], None]


class NoVariantPassed(RepoforgeError):
    """Not even fp32 passed (its outputs hold NaN or Inf on the validation data): nothing can be shipped."""

    exit_code = 1


def _fp32_source(t: ModelTarget, val: Arrays, cache: Cache, say: Say) -> tuple[Path, dict[str, Any] | None]:
    """The original model as ONNX: the file itself, or its export from torch (cached by its inputs)."""
    if t.format == "onnx":
        return t.source, None

    parts = ["export", t.format, sha256_file(t.source), t.options.opset, val.sha256, [x.__dict__ for x in t.inputs],
             [x.__dict__ for x in t.outputs], tool_versions()]  # fmt: skip
    if t.model_file is not None:
        parts += [sha256_file(t.model_file), t.class_name]
    path, info, reused = cache.file(key(*parts), lambda dest: export_onnx(t, val.inputs(t.inputs), dest))
    say(
        f"{t.name}: {t.format} → ONNX opset {t.options.opset}"
        + (" (cached)" if reused else f", max abs err vs torch {info['max_abs_err']:.2g}")
    )
    return path, info


def _maker(name: str, fp32: Path, t: ModelTarget, cal: Arrays | None) -> Callable[[Path], dict[str, Any]]:
    return lambda dest: make_variant(name, fp32, dest, t, cal)


def optimize_model(
    t: ModelTarget,
    val: Arrays,
    cal: Arrays | None,
    *,
    device: Device,
    cache: Cache,
    say: Say,
    verbose: bool = False,
) -> ModelResult:
    opts = t.options
    fp32_path, export = _fp32_source(t, val, cache, say)
    fp32_sha = sha256_file(fp32_path)
    versions = tool_versions()
    names = ["fp32", *[v for v in opts.variants if v != "fp32"]]
    rows: list[VariantResult] = []
    for name in names:
        if name == "tensorrt" and device == "gpu":
            rows.append(
                VariantResult(
                    name,
                    False,
                    "a TensorRT plan is built on the GPU host: `repoforge optimize --device gpu` "
                    f"writes tensorrt/{t.name}/build_plan.sh (trtexec) and its tensorrt_plan config",
                )
            )
            continue
        settings_key: list[Any] = []
        if name == "int8_static":
            assert cal is not None
            settings_key = [cal.sha256, opts.calibration_method, opts.per_channel]
        k = key("variant", name, fp32_sha, settings_key, versions)
        try:
            path, info, reused = cache.file(k, _maker(name, fp32_path, t, cal))
        except VariantUnavailable as exc:
            say(f"{t.name}: {name}: {exc}")
            rows.append(VariantResult(name, False, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a quantizer that fails on this model rejects one variant, not the run
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            say(f"{t.name}: {name}: could not be made: {line}")
            rows.append(VariantResult(name, False, f"could not be made: {type(exc).__name__}: {line}"))
            continue
        size = path.stat().st_size
        said = info.pop(CONVERSION_WARNINGS, [])
        note = ""
        if said:  # one line per variant; every warning only with -v (a big model gives hundreds)
            info[CONVERSION_WARNINGS] = len(said)
            note = (f"; {len(said)} float16 conversion warning{'s' if len(said) != 1 else ''} from the converter "
                    f"(values fp16 cannot hold; {'listed below' if verbose else '-v lists them'})")  # fmt: skip
        say(f"{t.name}: {name}: " + ("reused from the cache" if reused else f"made ({size:,} bytes)") + note)
        if verbose:
            for line in said:
                say(f"{t.name}: {name}:   {line}")
        rows.append(VariantResult(name, True, "", path, sha256_file(path), size, info, reused=reused))
    _gate(t, val, rows, fp32_path, fp32_sha, cache, say)
    sizes = batch_sizes(t)
    _time(t, val, rows, sizes, cache, say)
    accepted = {r.name: r.timing for r in rows if r.accepted and r.timing is not None and r.name not in NOT_SHIPPED}
    if not accepted:  # fp32 is judged against itself: only NaN/Inf outputs fail it
        raise NoVariantPassed(f"{t.name}: no variant passed its gate; fp32: {rows[0].reason or 'not made'}")
    selected, why = select(accepted, opts.select)
    result = ModelResult(t.name, selected, why, rows, sizes, export, host())
    if "tensorrt" in opts.variants and device == "gpu":
        result.tensorrt = plan_tensorrt(t)
    say(f"{t.name}: selected {selected} ({why})")
    return result


def _gate(
    t: ModelTarget, val: Arrays, rows: list[VariantResult], fp32: Path, fp32_sha: str, cache: Cache, say: Say
) -> None:
    v = t.options.validation
    outputs = [x.name for x in t.outputs]
    inputs = val.inputs(t.inputs)
    labels = val.arrays[v.labels] if v.labels else None
    ref: dict[str, Any] | None = None
    for row in rows:
        if not row.accepted or row.path is None:
            continue

        k = key("gate", row.name, row.sha256, fp32_sha, val.sha256, v.model_dump(), tolerance_for(row.name, t))
        cached = cache.record(k)
        if cached is not None:
            row.gate = GateResult(**cached)
        else:
            if ref is None:
                ref = run_model(fp32, inputs, outputs, t.max_batch_size)
            got = run_model(row.path, inputs, outputs, t.max_batch_size, runtime_of(row.name))
            row.gate = judge(row.name, t, got, ref, labels)
            cache.put(k, row.gate.as_dict())
        row.accepted = row.gate.accepted
        row.reason = row.gate.reason
        figure = f"top1 {row.gate.top1:.4f}" if row.gate.top1 is not None else f"agreement {row.gate.agreement:.4f}"
        verdict = "accepted" if row.accepted else f"rejected: {row.reason}"
        say(
            f"{t.name}: {row.name}: {figure}, max abs err {row.gate.max_abs_err:.2g}: {verdict}"
            + (" (cached)" if cached else "")
        )


def _time(t: ModelTarget, val: Arrays, rows: list[VariantResult], sizes: list[int], cache: Cache, say: Say) -> None:
    opts = t.options
    timed = [r for r in rows if r.path is not None]  # rejected ones too: the report shows what the gate cost
    h = host()
    k = key("timing", sorted((r.name, r.sha256) for r in timed), sizes, opts.rounds, opts.threads, val.sha256,
            h["cpu"], h["cpus"])  # fmt: skip
    cached = cache.record(k)
    if cached is None:
        say(f"{t.name}: timing {', '.join(r.name for r in timed)} at batch {sizes} ({opts.rounds} alternating rounds)")
        files = {r.name: r.path for r in timed if r.path is not None}
        timings = time_variants(
            files, val.inputs(t.inputs), sizes, opts.rounds, opts.threads, [x.name for x in t.outputs]
        )
        cache.put(k, {n: tm.as_dict() for n, tm in timings.items()})
    else:
        say(f"{t.name}: timings of {', '.join(r.name for r in timed)} reused from the cache")
        timings = {n: Timing.from_dict(d) for n, d in cached.items()}
    for r in timed:
        r.timing = timings[r.name]
