"""`repoforge build` of a spec with `optimize:`: run the step (cached by input hashes), then build the plan from the
selected variant (or, with `ship: all`, every accepted variant as a version, the selected one last so that a
request without a version gets it), and record the selection in the lock file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoforge.contract import Device
from repoforge.optimize.cache import Cache, key
from repoforge.optimize.run import OptimizeRun, RequiredVariantFailed, run_optimize
from repoforge.output import sha256_file
from repoforge.plan_base import RepositoryPlan
from repoforge.spec.load import LoadedSpec
from repoforge.spec.models import VersionPolicy

#: The per-model report shipped in each optimized model's folder: the evidence travels with the repository.
MODEL_REPORT = "optimize-report.json"


@dataclass
class Optimized:
    """What the build needs after the step: the lock entries and each model's report file."""

    lock: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)

    def attach(self, plan: RepositoryPlan) -> None:
        for name, path in self.reports.items():
            plan.model(name).extra_files[MODEL_REPORT] = path


def apply_optimize(
    loaded: LoadedSpec, device: Device, progress: Callable[[str], None], cache: Cache | None = None
) -> tuple[LoadedSpec, Optimized]:
    """The spec with each optimized model pointing at its shipped variant files (format onnx). A spec without
    `optimize:` comes back as it is."""
    if not any(m.optimize is not None for m in loaded.spec.models):
        return loaded, Optimized()
    cache = cache or Cache()
    run = run_optimize(loaded, device=device, cache=cache, progress=progress)
    failures = run.required_failures()
    if failures:
        raise RequiredVariantFailed("build failed (nothing was written):\n" + "\n".join(failures))
    return shipped_spec(run, cache, progress)


def shipped_spec(
    run: OptimizeRun, cache: Cache, progress: Callable[[str], None], *, ship_all: bool = False, only: bool = False
) -> tuple[LoadedSpec, Optimized]:
    """`run`'s spec with each optimized model pointing at what it ships; `ship_all` ships every accepted variant
    (the served measurement), `only` drops the models without `optimize:`."""
    loaded = run.loaded
    models = list(loaded.spec.models)
    done = Optimized()
    for t in run.targets:
        r = run.results[t.name]
        accepted = r.accepted()
        if t.options.ship == "all" or ship_all:
            shipped = [v for v in accepted if v.name != r.selected] + [r.variant(r.selected)]
        else:
            shipped = [r.variant(r.selected)]
        versions = {i + 1: v for i, v in enumerate(shipped)}
        raw = models[t.index]
        update: dict[str, Any] = {"format": "onnx", "model_file": None, "optimize": raw.optimize}
        if len(versions) == 1:
            update["path"] = str(shipped[0].path)
        else:
            update["path"] = None
            update["versions"] = {n: str(v.path) for n, v in versions.items()}
            if raw.version_policy is None or ship_all:
                update["version_policy"] = VersionPolicy(all=True)
        models[t.index] = raw.model_copy(update=update)
        done.lock[t.name] = {
            "selected": r.selected,
            "selection": r.why,
            "ship": t.options.ship,
            "versions": {str(n): v.name for n, v in versions.items()},
            "variants": {v.name: {"accepted": v.accepted, "sha256": v.sha256, "reason": v.reason} for v in r.variants},
            "source_sha256": _source_sha(t.source),
            "validation_sha256": run.report["models"][t.name]["validation"]["sha256"],
        }
        body = {
            **{k: v for k, v in run.report.items() if k != "models"},
            "model": t.name,
            **run.report["models"][t.name],
        }
        text = json.dumps(body, indent=2, sort_keys=True) + "\n"
        path = cache.root / "reports" / f"{key('report', text)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        done.reports[t.name] = path
        progress(f"{t.name}: ships {', '.join(f'version {n} = {v.name}' for n, v in versions.items())}")
    if only:
        names = {t.name for t in run.targets}
        models = [m for m in models if m.name in names]
    spec = loaded.spec.model_copy(update={"models": models})
    return dataclasses.replace(loaded, spec=spec), done


def _source_sha(path: Path) -> str:
    return sha256_file(path)
