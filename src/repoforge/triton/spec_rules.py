"""Triton's load-time rules (the same code `repoforge lint` runs) on the configs a plan builds, reported at the
spec's lines: a spec Triton would refuse fails the build with file:line, not the server's load."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import Device
from repoforge.lint.repository import ModelEntry, check_ensemble_steps
from repoforge.lint.rules import (
    ConfigContext,
    Layout,
    Sink,
    check_built_config,
    defines_auto_complete,
    versions_to_load,
)
from repoforge.plan_base import Checker, ModelPlan, python_filename
from repoforge.triton.config import build_config
from repoforge.triton.names import SPEC_WORDS
from repoforge.triton.spec_paths import spec_path


def _built_config(p: ModelPlan, device: Device) -> mc.ModelConfig | None:
    """The config this plan builds, or None where building it fails on a spec problem already reported
    (e.g. raw_config that does not parse)."""
    try:
        return build_config(p, device)
    except (ValueError, KeyError, text_format.ParseError):
        return None


def _spec_sink(ck: Checker, p: ModelPlan) -> Sink:
    """A lint sink that words its messages as the spec does (KIND_GPU -> gpu)."""
    return Sink(p.name, str(ck.loaded.path), words=SPEC_WORDS)


def _report(ck: Checker, p: ModelPlan, sink: Sink) -> None:
    """A sink's findings on `p`'s built config, at the spec's file:line (the config-path -> spec-path map). A setting
    Triton would ignore is refused where the spec writes it, not in raw_config (the escape hatch says exactly this
    config); other warnings are about the server it will meet, which lint reports."""
    for n, (finding, path) in enumerate(zip(sink.findings, sink.paths, strict=True)):
        where = spec_path(ck.loaded, p.index, p.spec, path)
        if finding.severity == "error" or (n in sink.ignored_settings and where[-1:] != ("raw_config",)):
            ck.add(where, finding.message)


def triton_rules(ck: Checker, p: ModelPlan, device: Device) -> None:
    """Triton's load-time rules (repoforge.lint.rules, the same code `repoforge lint` runs) on the config this
    plan builds, reported at the spec's lines."""
    cfg = _built_config(p, device)
    if cfg is None:
        return
    sink = _spec_sink(ck, p)
    entry = python_filename(p.spec)
    sources = [s / entry if s.is_dir() else s for s in p.versions.values() if s is not None and p.format == "python"]
    auto = any(defines_auto_complete(f.read_text(encoding="utf-8", errors="replace")) for f in sources if f.is_file())
    ctx = ConfigContext(p.name, gpu_count=0 if device == "cpu" else None)
    check_built_config(sink, cfg, ctx, auto_completed=auto)
    _report(ck, p, sink)


def ensemble_rules(ck: Checker, plans: dict[str, ModelPlan], device: Device) -> None:
    """Triton's ensemble-against-steps rules (repoforge.lint.repository, as `repoforge lint` runs them) on the configs
    the plan builds, once every ensemble's inputs and outputs are derived; reported at the spec's lines."""
    if not any(p.format == "ensemble" for p in plans.values()):
        return
    entries: dict[str, ModelEntry] = {}
    for p in plans.values():
        cfg = _built_config(p, device)
        if cfg is None:
            return
        folders = {v: str(v) for v in p.versions}
        loaded = versions_to_load(cfg, Layout(sorted(folders.values()), folders, []))[0]
        entries[p.name] = ModelEntry(p.name, Path(p.name), _spec_sink(ck, p), cfg, cfg, loaded, sorted(p.versions))
    for e in (p for p in plans.values() if p.format == "ensemble"):
        check_ensemble_steps(entries[e.name], entries)
        _report(ck, e, entries[e.name].sink)
