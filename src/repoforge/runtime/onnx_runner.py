"""Serve an ONNX model with onnxruntime inside Triton's Python backend (the CPU path, for Tritons
without the native onnxruntime backend, e.g. the one nvidia-pytriton bundles)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from repoforge.runtime.triton_model import ModelArgs, run_batched


def make_session(path: str, intra_op_threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if intra_op_threads > 0:
        so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """The `TritonPythonModel` for ONNX files: one `session.run` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        p = self.args.parameters
        path = os.path.join(self.args.repository, self.args.version, p.get("repoforge_model_file", "model.onnx"))
        self.session = make_session(path, int(p.get("intra_op_threads", "1")))
        self.output_names = [t.name for t in self.args.outputs]
        self.string_inputs = {t.name for t in self.args.inputs if t.dtype in ("STRING", "BYTES")}

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.string_inputs & feed.keys():
            feed[name] = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(feed[name])
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values))

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)

    def finalize(self) -> None:
        self.session = None
