import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """NVIDIA's auto_complete example in miniature: no config.pbtxt; auto_complete_config sets the
    inputs, outputs and max_batch_size, and Triton loads the model READY."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        names = {t["name"] for t in config["input"]}
        for t in [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}, {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}]:
            if t["name"] not in names:
                auto_complete_model_config.add_input(t)
        names = {t["name"] for t in config["output"]}
        for t in [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}]:
            if t["name"] not in names:
                auto_complete_model_config.add_output(t)
        auto_complete_model_config.set_max_batch_size(8)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b)]))
        return out
