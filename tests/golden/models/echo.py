"""Triton Python-backend model used by the golden spec: every output is a copy of the first input.

Only the build is tested (config.pbtxt goldens); the model exists so the repository is complete.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json

        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            first = pb_utils.get_input_tensor_by_name(request, self.inputs[0]).as_numpy()
            tensors = [pb_utils.Tensor(name, np.asarray(first).astype(dtype)) for name, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
