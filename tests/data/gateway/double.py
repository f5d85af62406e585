"""An ordinary test model: Y = 2 * X. X[0] == -1 is a poison request (always an error); SLEEP_MS (optional)
makes it slow, for timeouts."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            sleep = pb_utils.get_input_tensor_by_name(request, "SLEEP_MS")
            if sleep is not None:
                time.sleep(float(sleep.as_numpy().reshape(-1)[0]) / 1000.0)
            if x.size and x.reshape(-1)[0] == -1:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("poison: X[0] is -1")))
                continue
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", (x * 2).astype(np.float32))])
            )
        return responses
