"""TorchScript and eager PyTorch → ONNX with a dynamic batch axis, checked against torch on the validation inputs.

The export is lossless, so it is held to rtol 1e-4 / atol 1e-5 element-wise: a model the exporter gets wrong
fails here, naming the output and the error, rather than shipping as a quietly different "fp32" variant.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from repoforge import lazy
from repoforge.errors import RepoforgeError
from repoforge.optimize.data import ModelTarget
from repoforge.torchserve.eager import EagerLoadError, load_eager

EXPORT_RTOL = 1e-4
EXPORT_ATOL = 1e-5


class ExportError(RepoforgeError):
    """The model could not be exported, or its ONNX export answers differently from torch."""

    exit_code = 1


def _load_torch(t: ModelTarget) -> Any:
    torch = lazy.torch()

    if t.format == "torchscript":
        return torch.jit.load(str(t.source), map_location="cpu").eval()

    assert t.model_file is not None
    try:
        return load_eager(t.model_file, t.source, class_name=t.class_name)
    except EagerLoadError as exc:
        raise ExportError(f"{t.name}: {exc}") from None


def export_onnx(t: ModelTarget, inputs: dict[str, np.ndarray], dest: Path) -> dict[str, Any]:
    """Write `dest` (ONNX, opset from the spec, batch axis dynamic) and return the check against torch."""
    ort, torch = lazy.onnxruntime(), lazy.torch()

    module = _load_torch(t)
    names_in = [x.name for x in t.inputs]
    names_out = [x.name for x in t.outputs]
    sample = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n][: min(2, len(inputs[n]))])) for n in names_in)
    axes = {n: {0: "batch"} for n in (*names_in, *names_out)}
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), torch.no_grad(), warnings.catch_warnings():
            # the TorchScript-based exporter is deprecated in favour of torch.export's, which needs onnxscript and
            # does not take ScriptModules; the legacy one still handles both inputs this step is given
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)  # "no signature found for ScriptMethod": harmless
            torch.onnx.export(
                module, sample, str(dest), input_names=names_in, output_names=names_out, dynamic_axes=axes,
                opset_version=t.options.opset, dynamo=False,
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs its one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{t.name}: torch.onnx.export (opset {t.options.opset}) failed: {first}") from None
    with torch.no_grad():
        got = module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names_in))
    expected = [got] if isinstance(got, torch.Tensor) else list(got)
    sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    answers = sess.run(names_out, {n: inputs[n] for n in names_in})
    worst_abs = worst_rel = 0.0
    for name, want, have in zip(names_out, expected, answers, strict=True):
        w = want.detach().numpy()
        if w.shape != have.shape:
            raise ExportError(
                f"{t.name}: the ONNX export's output '{name}' has shape {list(have.shape)}, torch's {list(w.shape)}"
            )
        err = np.abs(have.astype(np.float64) - w.astype(np.float64))
        worst_abs = max(worst_abs, float(err.max(initial=0.0)))
        worst_rel = max(worst_rel, float((err / np.maximum(np.abs(w), 1e-12)).max(initial=0.0)))
        if not np.allclose(have, w, rtol=EXPORT_RTOL, atol=EXPORT_ATOL):
            raise ExportError(
                f"{t.name}: the ONNX export's output '{name}' differs from torch's beyond rtol {EXPORT_RTOL} / atol "
                f"{EXPORT_ATOL} (max abs err {float(err.max()):.3g}); the exporter does not support this model as is"
            )
    return {
        "from": t.format, "opset": t.options.opset, "rtol": EXPORT_RTOL, "atol": EXPORT_ATOL,
        "max_abs_err": worst_abs, "max_rel_err": worst_rel, "rows": int(len(next(iter(inputs.values())))),
    }  # fmt: skip
