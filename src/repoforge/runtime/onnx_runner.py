"""Serve an ONNX model with onnxruntime inside Triton's Python backend (the CPU path, for Tritons
without the native onnxruntime backend, e.g. the one nvidia-pytriton bundles)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import lazy
from .names import MODEL_FILE_PARAMETER
from .threads import AUTO, choose, parse_setting, timed
from .triton_model import ModelArgs, log_info, run_batched


def make_session(path: str, intra_op_threads: int) -> Any:
    """A CPU session whose pool threads sleep instead of spinning when idle (they share the cores
    with the server's frontend threads; see repoforge.runtime.threads)."""
    ort = lazy.onnxruntime()

    so = ort.SessionOptions()
    if intra_op_threads > 0:
        so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    if intra_op_threads != 1:  # a pool's idle threads sleep; with one thread spinning measured 4 % faster
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """The `TritonPythonModel` for ONNX files: one `session.run` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = ModelArgs.parse(args)
        p = self.args.parameters
        path = os.path.join(self.args.repository, self.args.version, p.get(MODEL_FILE_PARAMETER, "model.onnx"))
        setting = p.get("intra_op_threads", AUTO)
        fixed = parse_setting(setting)
        self.output_names = [t.name for t in self.args.outputs]
        self.string_inputs = {t.name for t in self.args.fed if t.dtype in ("STRING", "BYTES")}
        self.session = make_session(path, 1 if fixed is None else fixed)
        probe = self.args.probe_feed()
        choice = choose(setting, self.args.instances, lambda: timed(lambda: self._compute(dict(probe))))
        if fixed is None and choice.threads != 1:
            self.session = make_session(path, choice.threads)
        log_info(
            f"{self.args.name} v{self.args.version}: onnxruntime intra_op_threads {choice.threads} ({choice.reason})"
        )
        self.threads = choice

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.string_inputs & feed.keys():
            feed[name] = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(feed[name])
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values, strict=True))

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)

    def finalize(self) -> None:
        self.session = None
