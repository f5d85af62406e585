"""`repoforge lint`: static checks of any Triton model repository, without starting a server.

    from repoforge.lint import lint_repository
    report = lint_repository(Path("model_repository"))
    print(report.format()); raise SystemExit(report.exit_code)   # 1 on errors, 0 with warnings only

The rules are Triton 2.51's load-time rules (core's model_config_utils.cc, ensemble_utils.cc and
model_repository_manager.cc), proven against the real server by tests/integration/test_lint.py: an *error*
means Triton refuses to load the model, a *warning* means it loads but something is likely wrong.
Facts about the target server sharpen a few rules: ``known_backends`` (see `known_backends_of`)
makes a missing backend an error, ``gpu_count=0`` makes KIND_GPU instance groups errors.
"""

from __future__ import annotations

from .findings import Finding, LintReport, Severity
from .repository import lint_config, lint_repository
from .server import backends_in, detect_gpu_count, known_backends_of

__all__ = [
    "Finding",
    "LintReport",
    "Severity",
    "backends_in",
    "detect_gpu_count",
    "known_backends_of",
    "lint_config",
    "lint_repository",
]
