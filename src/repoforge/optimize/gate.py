"""The accuracy gate: every variant against fp32 on the user's validation data, with precision-aware defaults.

Two checks, both must pass. Top-1: against the labels (absolute accuracy drop) or, without labels, agreement with
fp32's top-1. Element-wise: an element fails when |variant - fp32| > max_abs + max_rel * |fp32| (numpy's allclose
form); INT8 variants have no element-wise default, since their top-1 is what users judge them by. A rejection's
reason names the failing figure and the threshold it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repoforge.optimize.data import ModelTarget
from repoforge.optimize.runners import open_runner

#: Element-wise defaults per variant (max_abs, max_rel); None: no element-wise gate unless the spec sets one.
DEFAULT_TOLERANCE: dict[str, tuple[float, float] | None] = {
    "fp32": (1e-5, 1e-4),
    "ort_optimized": (1e-5, 1e-4),  # graph rewrites only: held to the lossless export figures
    "openvino": (1e-4, 1e-3),
    "fp16": (1e-2, 1e-2),
    "tensorrt": (1e-2, 1e-2),
    "int8_dynamic": None,
    "int8_static": None,
}


@dataclass
class GateResult:
    accepted: bool
    reason: str
    top1: float | None  # with labels
    agreement: float | None  # top-1 agreement with fp32 (always measured)
    top1_drop: float | None
    max_abs_err: float
    max_rel_err: float
    tolerance: dict[str, float] | None
    failing_elements: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tolerance_for(variant: str, t: ModelTarget) -> tuple[float, float] | None:
    """The spec's tolerance where it sets a field, else the variant's precision default."""
    base = DEFAULT_TOLERANCE.get(variant)
    given = t.options.validation.tolerance
    if given is None or (given.max_abs is None and given.max_rel is None):
        return base
    abs_, rel = base if base is not None else (0.0, 0.0)
    return (given.max_abs if given.max_abs is not None else abs_, given.max_rel if given.max_rel is not None else rel)


def run_model(
    path: Path, inputs: dict[str, np.ndarray], outputs: list[str], batch: int, runtime: str = "onnxruntime"
) -> dict[str, np.ndarray]:
    """Every output over all rows, in batches of at most `batch` (the config's max_batch_size), on one thread:
    the gate's figures matter here, not its speed."""
    run = open_runner(path, runtime, outputs, threads=1)
    rows = len(next(iter(inputs.values())))
    parts = [run({k: v[s : s + batch] for k, v in inputs.items()}) for s in range(0, rows, batch)]
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(outputs)}


def _top1(values: np.ndarray) -> np.ndarray:
    """The class per row: the argmax of scores, or the value itself where the output already is a class id."""
    flat = values.reshape(len(values), -1)
    if np.issubdtype(values.dtype, np.integer) and flat.shape[1] == 1:
        return flat[:, 0]
    return flat.argmax(axis=1)


def judge(
    variant: str,
    t: ModelTarget,
    got: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    labels: np.ndarray | None,
) -> GateResult:
    """Compare a variant's outputs with fp32's; accepted only when every check passes."""
    head = t.options.validation.output or t.outputs[0].name
    drop_limit = t.options.validation.max_top1_drop
    reasons: list[str] = []
    for name, g in got.items():
        if not np.all(np.isfinite(g)):
            reasons.append(f"output '{name}' has NaN or Inf")
    agreement = float(np.mean(_top1(got[head]) == _top1(ref[head])))
    top1 = drop = None
    if labels is not None:
        top1 = float(np.mean(_top1(got[head]) == labels))
        ref_top1 = float(np.mean(_top1(ref[head]) == labels))
        drop = ref_top1 - top1
        if drop > drop_limit + 1e-12:
            reasons.append(f"top1 {top1:.4f} is {drop:.4f} below fp32's {ref_top1:.4f} (max_top1_drop {drop_limit:g})")
    elif 1.0 - agreement > drop_limit + 1e-12:
        reasons.append(
            f"top1 agreement with fp32 {agreement:.4f}: {1 - agreement:.4f} of rows differ (max_top1_drop {drop_limit:g})"
        )
    tol = tolerance_for(variant, t)
    worst_abs = worst_rel = 0.0
    failing = 0
    worst: tuple[float, str, float] | None = None  # (excess, output, |fp32| there)
    for name, g in got.items():
        r = ref[name].astype(np.float64)
        err = np.abs(g.astype(np.float64) - r)
        worst_abs = max(worst_abs, float(err.max(initial=0.0)))
        worst_rel = max(worst_rel, float((err / np.maximum(np.abs(r), 1e-12)).max(initial=0.0)))
        if tol is not None:
            allowed = tol[0] + tol[1] * np.abs(r)
            bad = err > allowed
            failing += int(bad.sum())
            if bad.any():
                k = int(np.argmax(err - allowed))
                excess = float((err - allowed).flat[k])
                if worst is None or excess > worst[0]:
                    worst = (excess, name, float(np.abs(r).flat[k]))
    if tol is not None and worst is not None:
        total = sum(g.size for g in got.values())
        reasons.append(
            f"max_abs_err {worst_abs:.3g} breaks max_abs {tol[0]:g} + max_rel {tol[1]:g} x |fp32| "
            f"({failing} of {total} elements; worst in '{worst[1]}' where |fp32| is {worst[2]:.3g})"
        )
    if reasons and variant == "int8_static" and t.options.calibration_method == "minmax":
        reasons[-1] += "; calibration_method entropy or percentile may keep more accuracy"
    return GateResult(
        accepted=not reasons, reason="; ".join(reasons), top1=top1, agreement=agreement, top1_drop=drop,
        max_abs_err=worst_abs, max_rel_err=worst_rel,
        tolerance=None if tol is None else {"max_abs": tol[0], "max_rel": tol[1]}, failing_elements=failing,
    )  # fmt: skip
