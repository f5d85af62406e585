"""Regenerate the tiny model files the bad-spec corpus needs: `python tests/bad_specs/models/make_models.py`.

fixed.onnx: FP32 [1, 4] -> FP32 [1, 4] (Relu) with a *fixed* first axis, so `max_batch_size > 0` on it
must be refused. dummy.plan: not a real TensorRT engine; the build only needs a file to exist.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from repoforge import modelgen

HERE = Path(__file__).resolve().parent


def fixed_first_axis() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "fixed_first_axis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", modelgen.DEFAULT_OPSET)],
        ir_version=modelgen.IR_VERSION,
        producer_name=modelgen.PRODUCER,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    modelgen.save(fixed_first_axis(), HERE / "fixed.onnx")
    (HERE / "dummy.plan").write_bytes(b"not a real TensorRT engine\n")


if __name__ == "__main__":
    main()
