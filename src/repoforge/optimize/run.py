"""The optimize step itself for the models of a spec: check every section and its data, make and measure each
model's variants, and the report built from them (`repoforge optimize` writes it; `build` ships the selection)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repoforge import __version__
from repoforge.contract import Device
from repoforge.errors import RepoforgeError
from repoforge.optimize.cache import Cache, tool_versions
from repoforge.optimize.data import ModelTarget, load_data, resolve_targets
from repoforge.optimize.pipeline import ModelResult, optimize_model
from repoforge.optimize.report import model_report
from repoforge.spec.load import LoadedSpec


class RequiredVariantFailed(RepoforgeError):
    """A variant listed in `required:` failed its gate (or could not be made)."""

    exit_code = 1


@dataclass
class OptimizeRun:
    """The results of every optimized model, and the report built from them."""

    loaded: LoadedSpec
    targets: list[ModelTarget]
    results: dict[str, ModelResult]
    report: dict[str, Any]
    cache: Cache  # holds the variant files the results point at (a scratch cache deletes them when collected)

    def required_failures(self) -> list[str]:
        out = []
        for t in self.targets:
            r = self.results[t.name]
            for name in t.options.required:
                v = next((x for x in r.variants if x.name == name), None)
                if v is None or not v.accepted:
                    out.append(f"{t.name}: required variant {name} was rejected: {v.reason if v else 'not made'}")
        return out


def run_optimize(
    loaded: LoadedSpec,
    models: list[str] | None = None,
    *,
    device: Device = "cpu",
    cache: Cache | None = None,
    progress: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> OptimizeRun:
    """Check every optimize section and its data first (SpecError, nothing done), then run each model."""
    say = progress or (lambda _m: None)
    targets = resolve_targets(loaded, models)
    data = load_data(loaded, targets)
    cache = cache or Cache()
    results = {
        t.name: optimize_model(t, *data[t.name], device=device, cache=cache, say=say, verbose=verbose) for t in targets
    }
    report = {
        "repoforge_version": __version__,
        "spec": str(loaded.path),
        "spec_sha256": loaded.sha256,
        "device": device,
        "tools": tool_versions(),
        "models": {
            t.name: model_report(
                results[t.name],
                {
                    "select": t.options.select if isinstance(t.options.select, str) else t.options.select.model_dump(),
                    "ship": t.options.ship,
                    "required": t.options.required,
                    "rounds": t.options.rounds,
                    "threads": t.options.threads,
                    "validation": {
                        "data": str(data[t.name][0].path),
                        "sha256": data[t.name][0].sha256,
                        "rows": data[t.name][0].rows(),
                        "labels": t.options.validation.labels,
                    },  # fmt: skip
                },
            )
            for t in targets
        },
    }
    return OptimizeRun(loaded, targets, results, report, cache)
