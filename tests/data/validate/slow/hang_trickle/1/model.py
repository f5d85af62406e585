"""Streams 40 responses 0.25 s apart (10 s in all): each comes quickly, together they exceed any small bound."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            for i in range(40):
                sender.send(
                    pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([float(i)], dtype=np.float32))])
                )
                time.sleep(0.25)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
