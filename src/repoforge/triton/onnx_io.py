"""Read an ONNX file's inputs and outputs, so specs need not repeat what the model already says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

# onnx.TensorProto element types → Triton dtype names
_ONNX_TO_TRITON: dict[int, str] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.STRING: "BYTES",
}


@dataclass(frozen=True)
class OnnxTensor:
    """A graph input/output with its full shape (batch axis included); -1 marks a dynamic dim."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class OnnxSignature:
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]

    def batchable(self) -> bool:
        """True when every tensor's first axis is dynamic: Triton can put a batch dimension there."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


class OnnxReadError(ValueError):
    """The file is not a readable ONNX model."""


def _tensor(value: onnx.ValueInfoProto) -> OnnxTensor:
    ttype = value.type.tensor_type
    dtype = _ONNX_TO_TRITON.get(ttype.elem_type)
    if dtype is None:
        raise OnnxReadError(
            f"tensor '{value.name}' has an element type ({onnx.TensorProto.DataType.Name(ttype.elem_type)}) Triton cannot serve"
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
    return OnnxTensor(value.name, dtype, dims)


def read_signature(path: Path) -> OnnxSignature:
    """Inputs (initializers excluded) and outputs of an ONNX model, without loading external weights."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, google.protobuf errors, OSError...
        raise OnnxReadError(f"cannot read ONNX model {path}: {exc}") from None
    init = {i.name for i in model.graph.initializer}
    inputs = tuple(_tensor(v) for v in model.graph.input if v.name not in init)
    outputs = tuple(_tensor(v) for v in model.graph.output)
    if not outputs:
        raise OnnxReadError(f"ONNX model {path} has no outputs")
    return OnnxSignature(inputs, outputs)
