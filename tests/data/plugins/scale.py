"""Test model: Y = X * factor (config parameter `factor`); KEY is accepted and ignored."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.factor = np.float32(params.get("factor", {}).get("string_value", "1"))

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * self.factor).astype(np.float32))]))
        return out
