"""Streams one response at once, and its final flag only 10 s later (from a thread, as decoupled models may)."""

import threading
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            sender.send(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]
                )
            )
            threading.Thread(target=self._finish_later, args=(sender,), daemon=True).start()
        return None

    @staticmethod
    def _finish_later(sender):
        time.sleep(10)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
