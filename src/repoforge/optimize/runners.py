"""Running a variant in process: onnxruntime for every ONNX variant, OpenVINO's runtime for `openvino`.

The gate and the timing call variants only through `open_runner`, so both judge each variant on the runtime that
would serve it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from repoforge import lazy

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

#: Variants run by something other than onnxruntime; repoforge's Triton build serves ONNX through onnxruntime,
#: so these are measured and reported but not shipped.
NOT_SHIPPED = {"openvino": "measured only: repoforge's Triton build serves ONNX through onnxruntime"}


def runtime_of(variant: str) -> str:
    return "openvino" if variant == "openvino" else "onnxruntime"


def open_runner(path: Path, runtime: str, outputs: list[str], threads: int = 1) -> Runner:
    """A callable feed → outputs (in `outputs` order) on one thread pool of `threads`."""
    if runtime == "openvino":
        ov = lazy.openvino()
        core = ov.Core()
        # f32: on CPUs with AMX or AVX512-BF16 OpenVINO otherwise runs in bf16, which this fp32 variant is not
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        compiled = core.compile_model(str(path), "CPU")
        request = compiled.create_infer_request()
        ports = [compiled.output(o) for o in outputs]

        def run_ov(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            result = request.infer(feed)
            return [np.asarray(result[p]) for p in ports]

        return run_ov
    ort = lazy.onnxruntime()

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run_ort(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(outputs, feed))

    return run_ort
