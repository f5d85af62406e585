import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Like NVIDIA's auto_complete example: auto_complete_config fills what the config leaves out
    (OUT has neither data_type nor dims, COUNT has no dims); Triton loads the model READY."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "COUNT", "data_type": "TYPE_INT32", "dims": [1]})
        return auto_complete_model_config

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x), pb_utils.Tensor("COUNT", np.array([x.size], dtype=np.int32))]))
        return out
