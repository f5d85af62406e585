import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Trivial fixture model: the lint corpus only needs it to load."""

    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
