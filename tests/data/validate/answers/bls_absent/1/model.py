"""A BLS model calling a model that is not loaded."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            inner = pb_utils.InferenceRequest(
                model_name="not_loaded",
                requested_output_names=["OUT"],
                inputs=[pb_utils.get_input_tensor_by_name(r, "IN")],
            ).exec()
            if inner.has_error():
                raise pb_utils.TritonModelException(inner.error().message())
            out.append(pb_utils.InferenceResponse([pb_utils.get_output_tensor_by_name(inner, "OUT")]))
        return out
