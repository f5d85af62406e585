import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Sequence model: running total per correlation id, reset when START is 1."""

    def initialize(self, args):
        self.totals = {}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            start = pb_utils.get_input_tensor_by_name(r, "START").as_numpy()
            corr = pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy()
            totals = []
            for i in range(x.shape[0]):
                key = int(corr[i].ravel()[0])
                base = 0.0 if int(start[i].ravel()[0]) else self.totals.get(key, 0.0)
                self.totals[key] = base + float(x[i].ravel()[0])
                totals.append([self.totals[key]])
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("TOTAL", np.array(totals, dtype=np.float32))]))
        return out
