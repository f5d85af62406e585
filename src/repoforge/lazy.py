"""The optional and heavy third-party packages, each imported on first use through one named loader.

Why: at module level they would make every command that merely imports a module pay for them (torch takes
seconds, onnx and onnxruntime's quantization half a second each, `repoforge --help` nothing at all), or fail
where an optional extra is not installed (torch, ray, openvino, onnxconverter-common, matplotlib, tqdm). Each
loader raises the package's ImportError, so a caller that offers a fallback catches it where it did before.
An import inside a function anywhere else in repoforge fails scripts/check_import_cycles.py: a package that
is light and always installed goes to module level; one that is not gets a loader here.
(The runtime, which runs inside servers and imports nothing of the rest, has its own: runtime/lazy.py.)
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

# --- optional extras: not installed by default ---------------------------------------------------------------


def torch() -> ModuleType:
    """torch (the torchserve extra; seconds to import): exporting and loading eager/TorchScript models."""
    import torch

    return torch


def ray() -> ModuleType:
    """ray (the ray extra): `batch --engine ray`."""
    import ray

    return ray


def ray_data() -> ModuleType:
    """ray.data (the ray extra): Ray Data's datasets, blocks and datasources."""
    import ray.data
    import ray.data.block
    import ray.data.datasource

    return ray.data


def openvino() -> ModuleType:
    """openvino (the openvino extra: `optimize:`'s openvino variant) without its model-conversion tools.
    `import openvino` imports `openvino.tools.ovc`, which sends a usage event to a web analytics service from a
    background thread that forks a process; a build tool must not phone home, and that fork, taken while numpy's
    BLAS threads run, hung our process. The runtime alone is all this variant needs, so ovc is stubbed out for the
    import (openvino.convert_model then raises)."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    stub = ModuleType("openvino.tools.ovc")

    def convert_model(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("openvino's model conversion tools are not loaded by repoforge (they send telemetry)")

    stub.convert_model = convert_model  # type: ignore[attr-defined]
    sys.modules["openvino.tools.ovc"] = stub
    try:
        import openvino
    finally:
        del sys.modules["openvino.tools.ovc"]
    return openvino


def onnxconverter_float16() -> ModuleType:
    """onnxconverter_common.float16 (the optimize extra): `optimize:`'s fp16 variant."""
    from onnxconverter_common import float16

    return float16


def pyplot() -> ModuleType:
    """matplotlib.pyplot (the triton extra), on the Agg backend: report plots, written to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def matplotlib_figure() -> tuple[type, type]:
    """(matplotlib's Figure, its Agg FigureCanvas) (the triton extra): a plot without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def tqdm() -> ModuleType:
    """tqdm (installed with ray, else absent): a progress bar on a terminal."""
    import tqdm

    return tqdm


# --- installed, but heavy to import and needed by few commands -----------------------------------------------


def onnxruntime() -> ModuleType:
    """onnxruntime: in-process inference (validate's reference answers, optimize's timing)."""
    import onnxruntime

    return onnxruntime


def onnxruntime_quantization() -> ModuleType:
    """onnxruntime.quantization (half a second): `optimize:`'s int8 variants."""
    import onnxruntime.quantization
    import onnxruntime.quantization.shape_inference

    return onnxruntime.quantization


def onnx() -> ModuleType:
    """onnx (half a second): reading and rewriting ONNX models."""
    import onnx

    return onnx


def onnx_reference() -> ModuleType:
    """onnx.reference: ONNX's own evaluator, validate's second opinion on an ONNX model."""
    import onnx.reference

    return onnx.reference


def parquet() -> ModuleType:
    """pyarrow.parquet: Parquet data (batch, drift), not loaded by a build that reads none."""
    import pyarrow.parquet

    return pyarrow.parquet


def arrow_csv() -> ModuleType:
    """pyarrow.csv: CSV data."""
    import pyarrow.csv

    return pyarrow.csv


def arrow_json() -> ModuleType:
    """pyarrow.json: JSON Lines data."""
    import pyarrow.json

    return pyarrow.json


def arrow_compute() -> ModuleType:
    """pyarrow.compute: column arithmetic on Arrow tables."""
    import pyarrow.compute

    return pyarrow.compute


def aiohttp() -> ModuleType:
    """aiohttp (a third of a second): asynchronous HTTP clients, for the HTTP protocol only."""
    import aiohttp

    return aiohttp


def triton_grpc_aio() -> ModuleType:
    """tritonclient.grpc.aio: Triton's asyncio gRPC client."""
    import tritonclient.grpc.aio

    return tritonclient.grpc.aio


def triton_http_aio() -> ModuleType:
    """tritonclient.http.aio (half a second, with aiohttp): Triton's asyncio HTTP client."""
    import tritonclient.http.aio

    return tritonclient.http.aio
