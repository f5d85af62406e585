"""Declares outputs A and B but answers only A."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("A", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests
        ]
