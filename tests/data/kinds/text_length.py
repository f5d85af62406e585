import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            lengths = np.vectorize(len, otypes=[np.int32])(text)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LENGTH", lengths)]))
        return out
