"""The reference profile: per feature, quantile bins (numeric) or category frequencies (categorical), stored as
JSON with the model's name and the source file's sha256, so a report can say what it compared against."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from repoforge import __version__
from repoforge.drift.data import DriftError, read_features
from repoforge.drift.stats import categorical_counts, numeric_counts
from repoforge.errors import relpath_for_messages
from repoforge.output import sha256_file, write_file_atomic

SCHEMA = "repoforge.drift.profile"
SCHEMA_VERSION = 1
DEFAULT_BINS = 10
TOP_CATEGORIES = 50
CDF_POINTS = 101  # percentiles kept for the Kolmogorov-Smirnov statistic


def profile_numeric(values: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Quantile bin edges (ties merged, so a discrete feature has fewer bins), frequencies over all rows
    (missing included, so they sum to 1 with `missing`), moments and percentile CDF points."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.sort(v[~np.isnan(v)])
    n = int(v.size)
    if ok.size == 0:
        raise ValueError("every value is missing")
    qs = np.unique(np.quantile(ok, np.linspace(0.0, 1.0, bins + 1)))
    # cut points: the inner quantiles; a constant feature keeps one bin at its value and two around it
    if qs.size > 2:
        edges = qs[1:-1]
    elif qs.size == 2:  # two values (a flag): one cut between them
        edges = qs[:1]
    else:
        edges = np.array([np.nextafter(qs[0], -np.inf), qs[0]])
    counts, missing = numeric_counts(edges.tolist(), v)
    x = np.unique(np.quantile(ok, np.linspace(0.0, 1.0, CDF_POINTS)))
    p = np.searchsorted(ok, x, side="right") / ok.size
    return {
        "kind": "numeric",
        "count": int(ok.size),
        "missing": missing / n,
        "mean": float(ok.mean()),
        "std": float(ok.std()),
        "min": float(ok[0]),
        "max": float(ok[-1]),
        "edges": [float(e) for e in edges],
        "frequencies": [float(c) / n for c in counts],
        "cdf": {"x": [float(a) for a in x], "p": [float(b) for b in p]},
    }


def profile_categorical(values: np.ndarray, top: int = TOP_CATEGORIES) -> dict[str, Any]:
    """The `top` most frequent categories (ties by name); the rest are pooled as `other`."""
    n = len(values)
    seen = Counter(str(v) for v in values if v is not None)
    if not seen:
        raise ValueError("every value is missing")
    kept = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    counts, other, missing = categorical_counts([c for c, _ in kept], values)
    return {
        "kind": "categorical",
        "count": n - missing,
        "missing": missing / n,
        "distinct": len(seen),
        "categories": {c: float(k) / n for (c, _), k in zip(kept, counts, strict=True)},
        "other": other / n,
    }


def make_profile(data: Path, model: str, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Profile every feature of DATA for MODEL."""
    if bins < 2:
        raise DriftError(f"--bins must be at least 2, got {bins}")
    feats = read_features(data)
    if not feats.columns:
        raise DriftError(f"{relpath_for_messages(data)}: no numeric or string feature to profile")
    features: dict[str, Any] = {}
    for name, (kind, values) in feats.columns.items():
        try:
            features[name] = profile_numeric(values, bins) if kind == "numeric" else profile_categorical(values)
        except ValueError as exc:  # every value missing: nothing to compare with later
            feats.skipped[name] = str(exc)
    if not features:
        raise DriftError(f"{relpath_for_messages(data)}: no feature has a value to profile")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "repoforge": __version__,
        "model": model,
        "source": {"file": data.name, "sha256": sha256_file(data), "rows": feats.rows},
        "bins": bins,
        "features": features,
        "skipped": feats.skipped,
    }


def write_profile(profile: dict[str, Any], out: Path, force: bool = False) -> Path:
    """Write to a temp file beside OUT and rename it over, so a reader never sees half a profile."""
    if (out.exists() or out.is_symlink()) and not force:
        raise DriftError(f"{relpath_for_messages(out)} already exists; pass --force to replace it")
    if out.is_dir():
        raise DriftError(f"{relpath_for_messages(out)} is a directory; name the profile file to write")
    write_file_atomic(out, json.dumps(profile, indent=2, sort_keys=True) + "\n")
    return out


def read_profile(path: Path) -> dict[str, Any]:
    """Load and check a profile; anything else (missing, not JSON, another schema) is a DriftError naming it."""
    shown = relpath_for_messages(path)
    try:
        prof = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DriftError(f"{shown}: cannot read the reference profile: {exc}") from None
    if not isinstance(prof, dict) or prof.get("schema") != SCHEMA:
        raise DriftError(f"{shown}: not a repoforge drift profile (write one with `repoforge drift profile`)")
    if prof.get("schema_version") != SCHEMA_VERSION:
        raise DriftError(
            f"{shown}: profile schema_version {prof.get('schema_version')!r}, this repoforge reads {SCHEMA_VERSION}"
        )
    feats = prof.get("features")
    if not isinstance(feats, dict) or not feats:
        raise DriftError(f"{shown}: the profile has no features")
    for name, f in feats.items():
        kind = f.get("kind") if isinstance(f, dict) else None
        need = {"kind", "missing"} | ({"edges", "frequencies", "cdf"} if kind == "numeric" else {"categories", "other"})
        if kind not in ("numeric", "categorical") or not need <= set(f):
            raise DriftError(f"{shown}: feature {name!r} is malformed (needs {', '.join(sorted(need))})")
        if kind == "numeric" and len(f["frequencies"]) != len(f["edges"]) + 1:
            raise DriftError(
                f"{shown}: feature {name!r} has {len(f['frequencies'])} frequencies for {len(f['edges'])} edges"
            )
    return prof
