"""Deterministic small ONNX models for examples, tests, benchmarks and ``repoforge init``.

Everything is built from numpy + ``onnx.helper`` so that no framework or download is needed, and the
same arguments always give the same bytes: the examples commit their model files and tests check that
regenerating them reproduces those files exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "COMPUTE_MLP",
    "SMALL_MLP",
    "add_mul",
    "mlp",
    "save",
    "save_all",
]

# Layer sizes of the MLP that perf benchmarks serve: small enough that serving overhead dominates.
SMALL_MLP: list[int] = [256, 512, 512, 16]
# A compute-bound MLP (about 80 MB of weights) for benchmarks where the model itself should dominate.
COMPUTE_MLP: list[int] = [1024, 4096, 4096, 16]

# IR 8 / opset 17: old enough for the onnxruntime inside every Triton release we target, new enough for
# the ops we use.
IR_VERSION = 8
DEFAULT_OPSET = 17
PRODUCER = "repoforge.modelgen"
BATCH_DIM = "batch"
MANIFEST = "models.sha256"


def _batched(name: str, width: int) -> onnx.ValueInfoProto:
    """An FP32 [batch, width] value info; the symbolic batch dim is what Triton batching needs."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, width])


def _model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """Wrap a graph with a pinned IR version and producer, and validate it, so every generator agrees."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp(
    sizes: Sequence[int],
    *,
    seed: int = 0,
    input_name: str = "input",
    output_name: str = "output",
    softmax: bool = False,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """A Gemm+Relu multilayer perceptron: FP32 [batch, sizes[0]] -> FP32 [batch, sizes[-1]].

    There is no Relu after the last Gemm (so outputs are logits, or probabilities with ``softmax``).
    Weights are uniform in +-1/sqrt(fan_in), like PyTorch's default init, so activations stay in a sane
    range however deep or wide the model is; ``seed`` makes distinct but reproducible variants.
    Initializers are named ``fc{i}.weight`` ([fan_in, fan_out]) and ``fc{i}.bias`` ([fan_out]).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ValueError(f"mlp needs at least two positive layer sizes, got {sizes}")
    if input_name == output_name:
        raise ValueError("input_name and output_name must differ")

    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    layers = len(sizes) - 1
    current = input_name
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        bound = 1.0 / np.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, size=fan_out).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"fc{i}.weight"),
            numpy_helper.from_array(bias, f"fc{i}.bias"),
        ]
        last = i == layers - 1
        gemm_out = output_name if last and not softmax else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [current, f"fc{i}.weight", f"fc{i}.bias"], [gemm_out], name=f"fc{i}"))
        current = gemm_out
        if not last:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [current], [output_name], name="softmax", axis=-1))

    graph = helper.make_graph(
        nodes,
        "mlp_" + "x".join(map(str, sizes)),
        [_batched(input_name, sizes[0])],
        [_batched(output_name, sizes[-1])],
        initializer=initializers,
    )
    return _model(graph, opset)


def add_mul(width: int = 4, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """A two-input model, y = (a + b) * 2 over FP32 [batch, width], for tests of multi-input handling.

    Its output is exact to compute by hand, so tests can check served results without a reference model.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
            helper.make_node("Mul", ["sum", "two"], ["y"], name="mul"),
        ],
        "add_mul",
        [_batched("a", width), _batched("b", width)],
        [_batched("y", width)],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return _model(graph, opset)


def save(model: onnx.ModelProto, path: str | Path) -> str:
    """Write ``model`` to ``path`` byte-for-byte reproducibly and return the file's sha256 hex digest.

    Fields that record who or when (producer_version, doc strings) are cleared on a copy, and protobuf
    is serialised deterministically, so committed example models can be regenerated and compared.
    """
    clean = onnx.ModelProto()
    clean.CopyFrom(model)
    clean.producer_version = ""
    clean.doc_string = ""
    clean.graph.doc_string = ""
    for node in clean.graph.node:
        node.doc_string = ""
    data = clean.SerializeToString(deterministic=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def save_all(models: Mapping[str, onnx.ModelProto], root: str | Path) -> dict[str, str]:
    """Save ``{relative path: model}`` under ``root`` and write a ``sha256sum -c`` style manifest.

    The manifest (``root/models.sha256``) is what the examples commit even where a model file is too big
    to commit, so anyone can check a regenerated model is the one the numbers were measured with.
    Returns ``{relative path: sha256}`` in the order given.
    """
    root = Path(root)
    digests = {rel: save(model, root / rel) for rel, model in models.items()}
    lines = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(digests.items()))
    (root / MANIFEST).write_text(lines, encoding="utf-8")
    return digests
