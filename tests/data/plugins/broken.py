"""Test model: slow, then fails every request (a shadow that must never disturb the primary)."""

import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.3)
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("broken on purpose")) for _ in requests]
