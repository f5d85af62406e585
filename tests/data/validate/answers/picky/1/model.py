"""Checks its values: a random (negative) request is refused by the model itself."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            if (x < 0).any():
                raise ValueError("IN must be non-negative")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.sqrt(x))]))
        return out
