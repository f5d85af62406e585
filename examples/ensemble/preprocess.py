"""Triton Python-backend model: standardise 8 raw tabular features, FEATURES = (RAW - MEAN) / STD.

Triton may hand execute() several requests at once; they are normalised in one vectorised numpy pass
and split back into one response per request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

# Per-feature statistics of the training data (fixed so that the example is reproducible).
MEAN = np.array([5.8, 3.0, 3.8, 1.2, 40.0, 0.5, 120.0, 7.5], dtype=np.float32)
STD = np.array([0.8, 0.4, 1.8, 0.8, 12.0, 0.25, 35.0, 2.0], dtype=np.float32)


class TritonPythonModel:
    def initialize(self, args):
        # Multiplying by a precomputed reciprocal is cheaper than dividing on every request.
        self.mean = MEAN
        self.inv_std = (1.0 / STD).astype(np.float32)

    def execute(self, requests):
        raws = [pb_utils.get_input_tensor_by_name(r, "RAW").as_numpy() for r in requests]
        features = (np.concatenate(raws).astype(np.float32, copy=False) - self.mean) * self.inv_std
        bounds = np.cumsum([len(raw) for raw in raws])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("FEATURES", np.ascontiguousarray(chunk))])
            for chunk in np.split(features, bounds)
        ]

    def finalize(self):
        pass
