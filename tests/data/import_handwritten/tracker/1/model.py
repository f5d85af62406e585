import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X")
            state = pb_utils.get_input_tensor_by_name(r, "STATE_IN")
            sender = r.get_response_sender()
            sender.send(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("Y", x.as_numpy()), pb_utils.Tensor("STATE_OUT", state.as_numpy())]
                ),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        return None
