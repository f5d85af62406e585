"""Serve a TorchScript model inside Triton's Python backend (CPU hosts without the libtorch backend).
Inputs are passed positionally in config order, as Triton's pytorch_libtorch backend does."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import lazy
from .names import MODEL_FILE_PARAMETER
from .threads import AUTO, choose, parse_setting, timed
from .triton_model import ModelArgs, log_info, run_batched


class TorchScriptRunner:
    def initialize(self, args: dict[str, str]) -> None:
        torch = lazy.torch()

        self.torch = torch
        self.args = ModelArgs.parse(args)
        p = self.args.parameters
        setting = p.get("intra_op_threads", AUTO)
        fixed = parse_setting(setting)
        torch.set_num_threads(1 if fixed is None else fixed or torch.get_num_threads())
        path = os.path.join(self.args.repository, self.args.version, p.get(MODEL_FILE_PARAMETER, "model.pt"))
        self.module = torch.jit.load(path, map_location="cpu").eval()
        probe = self.args.probe_feed()
        choice = choose(setting, self.args.instances, lambda: timed(lambda: self._compute(dict(probe))))
        if fixed is None and choice.threads != 1:
            torch.set_num_threads(choice.threads)
        log_info(f"{self.args.name} v{self.args.version}: torch intra-op threads {choice.threads} ({choice.reason})")
        self.threads = choice

    def _compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in self.args.inputs])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {t.name: o.detach().cpu().numpy() for t, o in zip(self.args.outputs, outs, strict=True)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(requests, self.args, self._compute)
