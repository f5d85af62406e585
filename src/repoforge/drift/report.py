"""`repoforge drift report`: current data against a reference profile, per feature PSI and KS, written as
drift-report.json, drift-report.md (worst first) and a plot of the worst features.

Every input is checked (profile readable, CURRENT readable, every reference feature present with the same
kind) before anything is written; OUT is built in a temp folder and renamed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repoforge import lazy
from repoforge.drift.data import DriftError, Kind, read_features
from repoforge.drift.profile import read_profile
from repoforge.drift.stats import frequencies, ks, psi_from_frequencies
from repoforge.errors import relpath_for_messages
from repoforge.output import atomic_dir, check_destination, sha256_file

REPORT_JSON = "drift-report.json"
REPORT_MD = "drift-report.md"
PLOT = "drift-worst.png"
DEFAULT_MAX_PSI = 0.2
PLOTTED = 4  # worst features drawn
MAX_PLOT_BINS = 25


@dataclass
class DriftReport:
    """What `drift report` found and wrote; `drifted` names the features past max_psi, worst first."""

    output: Path
    data: dict[str, Any]
    drifted: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _moments(values: np.ndarray) -> dict[str, float | None]:
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(ok.mean()), "std": float(ok.std())}


def _missing(kind: str, values: np.ndarray) -> float:
    n = len(values)
    gone = int(np.isnan(values).sum()) if kind == "numeric" else sum(v is None for v in values)
    return gone / n


def compare(
    profile: dict[str, Any], columns: dict[str, tuple[Kind, np.ndarray]], max_psi: float
) -> list[dict[str, Any]]:
    """One row per reference feature, worst PSI first (ties by name)."""
    rows: list[dict[str, Any]] = []
    for name, feat in profile["features"].items():
        kind, values = columns[name]
        ref, cur, labels = frequencies(feat, values)
        p = psi_from_frequencies(ref, cur)
        row: dict[str, Any] = {
            "feature": name,
            "kind": kind,
            "psi": p,
            "ks": ks(feat, values),
            "drifted": p > max_psi,
            "reference": {"missing": feat["missing"]},
            "current": {"count": len(values), "missing": _missing(kind, values)},
            "bins": {"labels": labels, "reference": ref.tolist(), "current": cur.tolist()},
        }
        if kind == "numeric":
            row["reference"].update(mean=feat.get("mean"), std=feat.get("std"))
            row["current"].update(_moments(values))
        rows.append(row)
    rows.sort(key=lambda r: (-r["psi"], r["feature"]))
    return rows


def _check(profile: dict[str, Any], current: Path) -> tuple[dict[str, tuple[Kind, np.ndarray]], list[str], int]:
    feats = read_features(current)
    shown = relpath_for_messages(current)
    missing = [n for n in profile["features"] if n not in feats.columns]
    if missing:
        why = "".join(f" ({n}: {feats.skipped[n]})" for n in missing if n in feats.skipped)
        raise DriftError(
            f"{shown}: missing feature{'s' if len(missing) > 1 else ''} of the reference: {', '.join(missing)}{why}"
        )
    for name, feat in profile["features"].items():
        kind, values = feats.columns[name]
        if kind != feat["kind"]:
            raise DriftError(f"{shown}: feature {name!r} is {kind} here but {feat['kind']} in the reference")
        if len(values) == 0:
            raise DriftError(f"{shown}: feature {name!r} has no rows")
    extra = sorted(set(feats.columns) - set(profile["features"]))
    return feats.columns, extra, feats.rows


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Drift report: {data['model']}",
        "",
        f"Reference: `{data['reference']['file']}` (profile of `{data['reference']['source']['file']}`, "
        f"{data['reference']['source']['rows']} rows); current: `{data['current']['file']}` "
        f"({data['current']['rows']} rows). Threshold: PSI > {data['max_psi']:g}.",
        "",
        f"**{len(data['drifted'])} of {len(data['features'])} features drifted**"
        + (f": {', '.join(data['drifted'])}" if data["drifted"] else ""),
        "",
        "| feature | kind | PSI | KS | ref mean | cur mean | ref missing | cur missing | drifted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["features"]:
        lines.append(
            f"| {r['feature']} | {r['kind']} | {r['psi']:.4f} | {_fmt(r['ks'])} | {_fmt(r['reference'].get('mean'), '.4g')} "
            f"| {_fmt(r['current'].get('mean'), '.4g')} | {r['reference']['missing']:.2%} | {r['current']['missing']:.2%} "
            f"| {'**yes**' if r['drifted'] else 'no'} |"
        )
    if data["extra_features"]:
        lines += ["", f"Not in the reference (not compared): {', '.join(data['extra_features'])}."]
    if data.get("plot_note"):
        lines += ["", data["plot_note"]]
    elif data.get("plot"):
        lines += ["", f"![worst features]({data['plot']})"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], dest: Path) -> str | None:
    """Reference vs current bin frequencies of the worst features; a note instead when matplotlib is missing."""
    try:
        Figure, FigureCanvasAgg = lazy.matplotlib_figure()
    except ImportError:
        return "No plot: matplotlib is not installed (pip install 'matplotlib>=3.7')."
    worst = rows[:PLOTTED]
    fig = Figure(figsize=(6.5 * len(worst), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(worst), squeeze=False)[0]
    for ax, r in zip(axes, worst, strict=True):
        labels, ref, cur = r["bins"]["labels"], np.array(r["bins"]["reference"]), np.array(r["bins"]["current"])
        keep = np.argsort(-np.maximum(ref, cur), kind="stable")[:MAX_PLOT_BINS]
        keep.sort()
        x = np.arange(keep.size)
        ax.bar(x - 0.2, ref[keep], width=0.4, label="reference", color="tab:blue")
        ax.bar(x + 0.2, cur[keep], width=0.4, label="current", color="tab:red" if r["drifted"] else "tab:orange")
        ax.set_xticks(x, [labels[i] for i in keep], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("fraction of rows")
        ax.set_title(f"{r['feature']}: PSI {r['psi']:.3f}" + (f", KS {r['ks']:.3f}" if r["ks"] is not None else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest)
    return None


def drift_report(
    reference: Path, current: Path, out: Path, max_psi: float = DEFAULT_MAX_PSI, force: bool = False
) -> DriftReport:
    """Compare CURRENT with the REFERENCE profile and write OUT; exit code is the caller's (1 when drifted)."""
    if not max_psi > 0:
        raise DriftError(f"--max-psi must be > 0, got {max_psi}")
    profile = read_profile(reference)
    check_destination(out, force, looks_ours=lambda p: (p / REPORT_JSON).exists())
    columns, extra, nrows = _check(profile, current)
    rows = compare(profile, columns, max_psi)
    data: dict[str, Any] = {
        "schema": "repoforge.drift.report",
        "schema_version": 1,
        "model": profile.get("model"),
        "max_psi": max_psi,
        "reference": {"file": reference.name, "source": profile.get("source", {})},
        "current": {"file": current.name, "sha256": sha256_file(current), "rows": nrows},
        "drifted": [r["feature"] for r in rows if r["drifted"]],
        "worst": rows[0]["feature"],
        "features": rows,
        "extra_features": extra,
        "plot": PLOT,
    }
    with atomic_dir(out, force) as tmp:
        note = plot(rows, tmp / PLOT)
        if note:
            data["plot"], data["plot_note"] = None, note
        (tmp / REPORT_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (tmp / REPORT_MD).write_text(markdown(data), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
    return DriftReport(output=out, data=data, drifted=data["drifted"], files=files)
