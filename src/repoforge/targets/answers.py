"""How a smoke answer is judged against a reference: shared by the Triton and TorchServe validations, so both
judge with the same tolerances."""

from __future__ import annotations

import numpy as np

from repoforge.targets.types import ModelCheck


def align(got: np.ndarray, ref: np.ndarray) -> np.ndarray | None:
    """`got` in `ref`'s shape when the two differ only by axes of size 1 (a (1000,) answer and a (1,1000,1,1)
    reference are one tensor: a config `reshape`, or a squeezed output); None when they are different tensors,
    which subtracting would broadcast into a meaningless error."""
    if got.shape == ref.shape:
        return got
    drop = [d for d in got.shape if d != 1], [d for d in ref.shape if d != 1]
    return got.reshape(ref.shape) if drop[0] == drop[1] else None


def _max_err(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    return max(
        (
            float(np.max(np.abs(got[k].astype(np.float64) - ref[k].astype(np.float64)))) if got[k].size else 0.0
            for k in ref
        ),
        default=0.0,
    )


def _near(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding of differently ordered sums: relative 1e-3, and an absolute floor scaled by the
    output's magnitude (near-zero entries of a large output carry the rounding of large partial sums)."""
    if a.dtype.kind not in "fc" and b.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    scale = max(1.0, float(np.max(np.abs(b.astype(np.float64))))) if b.size else 1.0
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale))


def judge_answer(
    name: str,
    version: str,
    got: dict[str, np.ndarray],
    ref: dict[str, np.ndarray] | None,
    latency_ms: float,
    *,
    independent: dict[str, np.ndarray] | None = None,
    note: str = "",
) -> ModelCheck:
    """A READY model's smoke answer: ok as is, or compared with in-process onnxruntime when there is a reference
    and with onnx.reference when that could run it (shared by the Triton and TorchServe validations, so both
    judge with the same tolerances). `got` has every output (the callers report missing ones); shapes are aligned
    first, and two different tensors fail the row as a shape mismatch instead of broadcasting."""
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in got.items())
    if ref is None:
        return ModelCheck(name, version, "READY", True, f"answered {shapes}", latency_ms=latency_ms)
    reference = "onnxruntime" + ("+onnx.reference" if independent is not None else "")
    aligned = {k: align(np.asarray(got[k]), np.asarray(ref[k])) for k in ref}
    wrong = [
        f"{k}: answered shape {list(np.shape(got[k]))}, the reference has {list(np.shape(ref[k]))}"
        for k, a in aligned.items()
        if a is None
    ]
    if wrong:
        return ModelCheck(
            name,
            version,
            "READY",
            False,
            "shape mismatch: " + "; ".join(wrong),
            latency_ms=latency_ms,
            reference=reference,
        )
    answer = {k: a for k, a in aligned.items() if a is not None}
    err = _max_err(answer, ref)
    close = all(np.allclose(answer[k], ref[k], rtol=1e-4, atol=1e-5) for k in ref)
    if not close:
        return ModelCheck(
            name,
            version,
            "READY",
            False,
            f"differs from in-process onnxruntime: max abs err {err:.3e}",
            max_abs_err=err,
            latency_ms=latency_ms,
            reference=reference,
        )
    msg = f"answered {shapes}; matches onnxruntime (max abs err {err:.2e})"
    if independent is not None:
        # numpy and onnxruntime sum in different orders: float32 rounding, not a wrong answer
        theirs = {k: a for k in ref if (a := align(np.asarray(independent[k]), np.asarray(ref[k]))) is not None}
        ind_err = _max_err(answer, theirs) if len(theirs) == len(ref) else float("inf")
        if len(theirs) < len(ref) or not all(_near(answer[k], theirs[k]) for k in ref):
            return ModelCheck(
                name,
                version,
                "READY",
                False,
                f"matches onnxruntime but differs from onnx.reference "
                f"(an implementation independent of onnxruntime): max abs err {ind_err:.3e}",
                max_abs_err=err,
                latency_ms=latency_ms,
                reference=reference,
            )
        msg += f" and onnx.reference (max abs err {ind_err:.2e})"
    elif note:
        msg += f"; {note}"
    return ModelCheck(name, version, "READY", True, msg, max_abs_err=err, latency_ms=latency_ms, reference=reference)
