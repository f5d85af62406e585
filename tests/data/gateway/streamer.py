"""A decoupled test model: COUNT responses, DELAY_MS apart, an error after FAIL_AFTER of them (when given).

It appends what it did to the file named by the config parameter `log_file`, one line each: `<tag> sent <i>`,
`<tag> cancelled after <n>`, `<tag> failed after <n>`, `<tag> finished <n>`; tests read it to see that a client's
disconnect reached the model."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.log_file = params["log_file"]["string_value"]

    def _log(self, line):
        with open(self.log_file, "a") as f:
            f.write(line + "\n")

    def _scalar(self, request, name, default):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(self._scalar(request, "COUNT", 1))
            delay = int(self._scalar(request, "DELAY_MS", 0)) / 1000.0
            fail_after = int(self._scalar(request, "FAIL_AFTER", -1))
            tag = self._scalar(request, "TAG", b"-")
            tag = tag.decode() if isinstance(tag, bytes) else str(tag)
            sent = 0
            for i in range(count):
                if sender.is_cancelled():
                    self._log(f"{tag} cancelled after {sent}")
                    break
                if i == fail_after:
                    self._log(f"{tag} failed after {sent}")
                    error = pb_utils.TritonError(f"streamer failed on purpose after {sent} responses")
                    sender.send(
                        pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                    )
                    sender = None
                    break
                out = [
                    pb_utils.Tensor("INDEX", np.array([i], dtype=np.int32)),
                    pb_utils.Tensor("TEXT", np.array([f"token {i}".encode()], dtype=np.object_)),
                ]
                sender.send(pb_utils.InferenceResponse(output_tensors=out))
                sent += 1
                self._log(f"{tag} sent {i}")
                if delay:
                    time.sleep(delay)
            else:
                self._log(f"{tag} finished {sent}")
            if sender is not None:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
