"""`repoforge optimize SPEC [-m MODEL] -o OUT`: the whole optimize step for the models of a spec, with its report."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from repoforge.contract import Device
from repoforge.optimize.cache import Cache
from repoforge.optimize.report import REPORT_JSON, REPRODUCE, reproduce_script, write_report
from repoforge.optimize.run import OptimizeRun, RequiredVariantFailed, run_optimize
from repoforge.optimize.served import measure_served
from repoforge.optimize.tensorrt import write_tensorrt
from repoforge.optimize.timing import Timing, select
from repoforge.output import atomic_dir, check_destination
from repoforge.spec import load_spec

__all__ = ["OptimizeRun", "RequiredVariantFailed", "optimize", "run_optimize"]


def optimize(
    spec: str | Path,
    output: str | Path,
    *,
    models: list[str] | None = None,
    device: Device = "cpu",
    force: bool = False,
    use_cache: bool = True,
    served: bool = False,
    progress: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> OptimizeRun:
    """Run `optimize:` for the spec's models and write the report to `output` atomically; `served` also measures
    the accepted variants through a real tritonserver (perf_analyzer).

    Raises SpecError (nothing written) for a wrong section or data file, BuildError when `output` exists without
    `force`, and RequiredVariantFailed (after writing the report, which says why) when a required variant fails."""
    out = Path(output)
    check_destination(out, force, lambda p: (p / REPORT_JSON).exists())
    loaded = load_spec(spec)
    cache = Cache(enabled=use_cache)
    run = run_optimize(loaded, models, device=device, cache=cache, progress=progress, verbose=verbose)
    if served:
        for name, per in measure_served(run, cache, progress or (lambda _m: None)).items():
            t = next(x for x in run.targets if x.name == name)
            chosen, why = select({n: Timing(lat) for n, lat in per.items()}, t.options.select)
            run.report["models"][name]["served_selected"] = chosen  # what the same rule picks on served figures
            run.report["models"][name]["served_selection"] = why
            for row in run.report["models"][name]["variants"]:
                got = per.get(row["name"])
                row["served_latency_ms"] = {str(b): m for b, (m, _lo, _hi) in got.items()} if got else {}
                row["served_latency_range_ms"] = {str(b): [lo, hi] for b, (_m, lo, hi) in got.items()} if got else {}
    with atomic_dir(out, force) as tmp:
        notes = write_report(tmp, run.report)
        for note in notes:
            (progress or (lambda _m: None))(note)
        names = [t.name for t in run.targets]
        (tmp / REPRODUCE).write_text(reproduce_script(loaded.path, names, device, run.report["tools"]))
        (tmp / REPRODUCE).chmod(0o755)
        for t in run.targets:
            r = run.results[t.name]
            sel = r.variant(r.selected)
            if sel.path is not None:
                (tmp / "models" / t.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sel.path, tmp / "models" / t.name / f"{r.selected}.onnx")
            if r.tensorrt is not None:
                int8 = next((v.path for v in r.variants if v.name == "int8_static" and v.accepted), None)
                fp32 = r.variant("fp32").path
                assert fp32 is not None
                r.tensorrt["status"] = write_tensorrt(r.tensorrt, tmp / "tensorrt" / t.name, fp32, int8)
                run.report["models"][t.name]["tensorrt"]["status"] = r.tensorrt["status"]
                write_report(tmp, run.report)
    failures = run.required_failures()
    if failures:
        raise RequiredVariantFailed("\n".join(failures) + f"\n(the report is in {out})")
    return run
