"""`optimize:` export, quantize and compile each model, gate every variant on accuracy against the original on the
user's data, time them side by side, and ship the fastest that passes (`repoforge optimize`, `repoforge build`)."""

from repoforge.optimize.command import OptimizeRun, RequiredVariantFailed, optimize, run_optimize

__all__ = ["OptimizeRun", "RequiredVariantFailed", "optimize", "run_optimize"]
