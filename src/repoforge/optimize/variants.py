"""Make each variant of an fp32 ONNX model as a file onnxruntime (and so repoforge's CPU runner) can serve.

Each maker writes one `.onnx` and returns what it did; one that cannot run on this machine raises
VariantUnavailable with one line saying why, which the report shows instead of a traceback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repoforge import lazy
from repoforge.optimize.data import Arrays, ModelTarget

#: Rows per calibration batch fed to onnxruntime's calibrator.
CALIBRATION_BATCH = 32
#: The settings key under which a maker keeps the converter's warnings (onnxconverter-common's float16 ones).
CONVERSION_WARNINGS = "conversion_warnings"


class VariantUnavailable(Exception):
    """This variant cannot be made here; the message is one line for the report."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization prints progress and a pre-processing hint to stdout and the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _ort_optimized(src: Path, dest: Path) -> dict[str, Any]:
    """onnxruntime's offline graph optimization (constant folding, fusions). EXTENDED, not ALL: ALL adds layout
    rewrites for this CPU's instruction set, which a saved model must not carry to another host."""
    ort = lazy.onnxruntime()

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dest)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}


def _fp16(src: Path, dest: Path) -> dict[str, Any]:
    onnx = lazy.onnx()

    try:
        float16 = lazy.onnxconverter_float16()
    except ImportError:
        raise VariantUnavailable("fp16 needs onnxconverter-common (pip install 'repoforge[optimize]')") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every one, to count them; none reaches the screen
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dest))
    info: dict[str, Any] = {"keep_io_types": True}
    said = [str(w.message) for w in caught]
    if said:  # values fp16 cannot hold, clipped or truncated: the pipeline shows a count, all of them with -v
        info[CONVERSION_WARNINGS] = said
    return info


def _openvino(src: Path, dest: Path) -> dict[str, Any]:
    """OpenVINO reads the fp32 ONNX itself and compiles it for this CPU at load; the variant is that runtime."""
    try:
        ov = lazy.openvino()
    except ImportError:
        raise VariantUnavailable("openvino is not installed (pip install 'repoforge[openvino]')") from None
    shutil.copyfile(src, dest)
    ov.Core().compile_model(str(dest), "CPU")  # a model OpenVINO cannot compile fails here, as one line
    return {"runtime": "openvino", "openvino": ov.__version__}


def _int8_dynamic(src: Path, dest: Path) -> dict[str, Any]:
    """Weights INT8 ahead of time, activations quantized per batch at run time (no calibration data)."""
    q = lazy.onnxruntime_quantization()

    with _quiet():
        q.quantize_dynamic(str(src), str(dest), weight_type=q.QuantType.QInt8, per_channel=False)
    return {"weight_type": "QInt8", "activations": "dynamic"}


class _Reader:
    """onnxruntime's CalibrationDataReader over the calibration arrays, in fixed-size batches."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        rows = len(next(iter(arrays.values())))
        self._batches = iter(
            [{k: v[s : s + CALIBRATION_BATCH] for k, v in arrays.items()} for s in range(0, rows, CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _int8_static(src: Path, dest: Path, t: ModelTarget, calibration: Arrays | None) -> dict[str, Any]:
    """QDQ INT8 (weights and activations) with ranges from the calibration data; onnxruntime fuses the QDQ pairs
    into integer kernels at load."""
    q = lazy.onnxruntime_quantization()
    CalibrationMethod, QuantFormat, QuantType = q.CalibrationMethod, q.QuantFormat, q.QuantType

    assert calibration is not None  # resolve_targets requires it
    method = {
        "minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution,
    }[t.options.calibration_method]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="repoforge-int8-") as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        try:
            q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the model as it is instead
            shutil.copyfile(src, pre)
        q.quantize_static(
            str(pre), str(dest), _Reader(calibration.inputs(t.inputs)), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=t.options.per_channel,
            calibrate_method=method,
        )  # fmt: skip
    return {
        "format": "QDQ", "calibration_method": t.options.calibration_method, "per_channel": t.options.per_channel,
        "calibration_rows": calibration.rows(), "activation_type": "QUInt8", "weight_type": "QInt8",
    }  # fmt: skip


def make_variant(name: str, fp32: Path, dest: Path, t: ModelTarget, calibration: Arrays | None) -> dict[str, Any]:
    """Write variant `name` of `fp32` to `dest`; returns its settings. Raises VariantUnavailable."""
    if name == "fp32":
        shutil.copyfile(fp32, dest)
        return {}
    if name == "ort_optimized":
        return _ort_optimized(fp32, dest)
    if name == "fp16":
        return _fp16(fp32, dest)
    if name == "int8_dynamic":
        return _int8_dynamic(fp32, dest)
    if name == "int8_static":
        return _int8_static(fp32, dest, t, calibration)
    if name == "openvino":
        return _openvino(fp32, dest)
    if name == "tensorrt":
        raise VariantUnavailable("tensorrt applies to --device gpu; this is a --device cpu run")
    raise VariantUnavailable(f"unknown variant {name}")
