"""What `optimize` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/optimize.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repoforge.cli.common import progress
from repoforge.contract import Device
from repoforge.optimize import optimize as do_optimize


def optimize(
    spec: Path,
    models: tuple[str, ...],
    output: Path,
    device: Device,
    force: bool,
    no_cache: bool,
    served: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """`repoforge optimize` once its arguments are parsed."""
    run = do_optimize(
        spec,
        output,
        models=list(models) or None,
        device=device,
        force=force,
        use_cache=not no_cache,
        served=served,
        progress=progress(quiet or as_json),
        verbose=verbose,
    )
    if as_json:
        click.echo(json.dumps(run.report, indent=2, sort_keys=True))
        return
    for name, m in run.report["models"].items():
        click.echo(f"{name}: selected {m['selected']} ({m['selection']})")
        for v in m["variants"]:
            acc = v["top1"] if v["top1"] is not None else v["agreement"]
            lat = ", ".join(f"{b}: {ms:.3f} ms" for b, ms in v["latency_ms"].items())
            if v.get("served_latency_ms"):
                lat += "; served " + ", ".join(f"{b}: {ms:.3f} ms" for b, ms in v["served_latency_ms"].items())
            verdict = "accepted" if v["accepted"] else f"rejected: {v['reason']}"
            click.echo(f"  {v['name']:<14} {'top1' if v['top1'] is not None else 'agreement'} "
                       f"{'–' if acc is None else f'{acc:.4f}'}  {lat or '(not timed)'}  {verdict}")  # fmt: skip
    click.echo(f"report: {Path(output) / 'optimize-report.md'}")
