"""`repoforge perf`: measure a served model with NVIDIA perf_analyzer, write a report, gate regressions.

- :mod:`repoforge.perf.analyzer` finds and runs perf_analyzer (one concurrency at a time) and parses
  its CSV into :class:`PerfPoint` rows.
- :mod:`repoforge.perf.report` writes ``report.json``, ``report.md`` and PNG plots, atomically.
- :mod:`repoforge.perf.baseline` keeps a baseline JSON and compares a report against it, in absolute
  numbers or relative to a calibration model measured in the same run (for noisy CI machines).
"""

from .analyzer import (
    PerfAnalyzerNotFoundError,
    PerfError,
    PerfOptions,
    PerfPoint,
    build_command,
    commands,
    default_stability_percentage,
    find_perf_analyzer,
    list_models,
    parse_concurrency,
    parse_csv,
    perf_env,
    resolve_shapes,
    run,
    run_calibrated,
)
from .baseline import Baseline, BaselineEntry, GateResult, GateRow, compare, update_baseline
from .report import MachineInfo, PerfReport, load_report, machine_info, render_markdown, write_report

__all__ = [
    "Baseline",
    "BaselineEntry",
    "GateResult",
    "GateRow",
    "MachineInfo",
    "PerfAnalyzerNotFoundError",
    "PerfError",
    "PerfOptions",
    "PerfPoint",
    "PerfReport",
    "build_command",
    "commands",
    "compare",
    "default_stability_percentage",
    "find_perf_analyzer",
    "list_models",
    "load_report",
    "machine_info",
    "parse_concurrency",
    "parse_csv",
    "perf_env",
    "render_markdown",
    "resolve_shapes",
    "run",
    "run_calibrated",
    "update_baseline",
    "write_report",
]
