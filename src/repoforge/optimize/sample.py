"""A small trained classifier with its calibration and validation data, seeded, for tests, the bench and trying
`optimize:` out. Trained in numpy (random ReLU features, ridge read-out), so it needs neither torch nor a download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from repoforge.modelgen import save


def clusters(
    n: int, features: int = 16, classes: int = 4, *, seed: int = 0, spread: float = 1.6
) -> tuple[np.ndarray, np.ndarray]:
    """`n` rows of Gaussian clusters around fixed class centres (the same centres for every seed of a problem)."""
    centres = np.random.default_rng(1234).normal(size=(classes, features)) * 2.0
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(scale=spread, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def train_classifier(
    x: np.ndarray, y: np.ndarray, *, hidden: tuple[int, ...] = (64,), seed: int = 0, ridge: float = 1e-2,
    input_name: str = "input", output_name: str = "logits",
) -> onnx.ModelProto:  # fmt: skip
    """An MLP (Gemm+Relu, logits out) whose hidden layers are random projections and whose last layer is fitted
    by ridge regression on one-hot labels: trained in a second, and a real classifier for the gate to judge."""
    rng = np.random.default_rng(seed)
    classes = int(y.max()) + 1
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    h = (x - mean) / std
    fan_in = x.shape[1]
    for k, width in enumerate(hidden):
        w = rng.normal(scale=1.0 / np.sqrt(fan_in), size=(fan_in, width)).astype(np.float32)
        b = rng.normal(scale=0.1, size=width).astype(np.float32)
        if k == 0:  # fold the standardisation into the first layer
            w, b = (w / std[:, None]).astype(np.float32), (b - (mean / std) @ w).astype(np.float32)
            h = np.maximum(x @ w + b, 0)
        else:
            h = np.maximum(h @ w + b, 0)
        layers.append((w, b))
        fan_in = width
    onehot = np.eye(classes, dtype=np.float64)[y]
    a = np.concatenate([h, np.ones((len(h), 1))], axis=1).astype(np.float64)
    sol = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ onehot)
    layers.append((sol[:-1].astype(np.float32) * 10, sol[-1].astype(np.float32) * 10))  # scaled logits
    nodes, inits, current = [], [], input_name
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        last = i == len(layers) - 1
        out = output_name if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [current, f"fc{i}.weight", f"fc{i}.bias"], [out], name=f"fc{i}"))
        current = out
        if not last:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"

    def batched(name: str, width: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", width])

    graph = helper.make_graph(
        nodes, "classifier", [batched(input_name, x.shape[1])], [batched(output_name, classes)], initializer=inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="repoforge")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_project(root: Path, *, rows: int = 600, features: int = 16, classes: int = 4, hidden: tuple[int, ...] = (64,),
                  variants: str = "[fp32, ort_optimized, int8_dynamic, int8_static, fp16]", extra: str = "",
                  name: str = "classifier") -> Path:  # fmt: skip
    """`root/spec.yaml` with one optimized classifier, its model and data; returns the spec path."""
    root.mkdir(parents=True, exist_ok=True)
    x, y = clusters(rows, features, classes, seed=0)
    save(train_classifier(x, y, hidden=hidden), root / "classifier.onnx")
    xc, _ = clusters(128, features, classes, seed=1)
    xv, yv = clusters(256, features, classes, seed=2)
    np.savez(root / "calib.npz", input=xc)
    np.savez(root / "val.npz", input=xv, labels=yv)
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\n"
        "models:\n"
        f"  - name: {name}\n"
        "    format: onnx\n"
        "    path: classifier.onnx\n"
        "    max_batch_size: 16\n"
        "    optimize:\n"
        f"      variants: {variants}\n"
        "      calibration: calib.npz\n"
        "      validation: {data: val.npz, labels: labels, max_top1_drop: 0.02}\n"
        "      rounds: 2\n" + extra
    )
    return spec
