"""Test model for rollouts: Y = X * factor, after sleep_ms per call; every fail_every-th call is answered
with an error (fail_every 20: 5 % of its requests, as the router's BLS calls them)."""

import itertools
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = {
            k: v.get("string_value", "") for k, v in json.loads(args["model_config"]).get("parameters", {}).items()
        }
        self.factor = np.float32(params.get("factor", "1"))
        self.sleep_s = float(params.get("sleep_ms", "0")) / 1000.0
        self.fail_every = int(params.get("fail_every", "0"))
        self.calls = itertools.count(1)

    def execute(self, requests):
        if self.sleep_s:
            time.sleep(self.sleep_s)
        out = []
        for r in requests:
            n = next(self.calls)
            if self.fail_every and n % self.fail_every == 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("failing on purpose")))
                continue
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * self.factor).astype(np.float32))]))
        return out
