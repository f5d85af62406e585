"""`repoforge validate` for a TorchServe build: start real TorchServe on it, smoke-infer every model
with inputs made from its archived config, and compare ONNX models with in-process onnxruntime."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from repoforge.triton.inputs import concrete_shape, random_array
from repoforge.validate import ModelCheck, ValidationReport, judge_answer


def archived_config(mar: Path) -> dict[str, Any]:
    """The model-config.yaml repoforge put in a .mar (its `handler:` section lists inputs and outputs)."""
    with zipfile.ZipFile(mar) as z:
        return yaml.safe_load(z.read("model-config.yaml")) or {}


def _inputs(handler: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    mbs = int(handler.get("max_batch_size", 0))
    return {t["name"]: random_array(t["dtype"], concrete_shape(list(t["dims"]), mbs), rng) for t in handler.get("inputs", [])}


def _payload(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The JSON body repoforge's handler reads: one key per input, rows as nested lists."""
    return {k: (v.astype(str) if v.dtype == object else v).tolist() for k, v in inputs.items()}


def random_request(handler: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """A valid request body for an archived model (random data of the right dtype and shape)."""
    return _payload(_inputs(handler, np.random.default_rng(seed)))


def _reference(mar: Path, handler: dict[str, Any], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    if handler.get("format") != "onnx":
        return None
    import onnxruntime as ort

    with zipfile.ZipFile(mar) as z:
        model = z.read(handler.get("serialized_file", "model.onnx"))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [t["name"] for t in handler.get("outputs", [])]
    return dict(zip(names, sess.run(names, inputs)))


def check_model(server: Any, mar: Path, seed: int = 0) -> ModelCheck:
    name = mar.stem
    handler = archived_config(mar).get("handler", {})
    if not handler.get("inputs"):
        return ModelCheck(name, "1", "READY", True, "custom handler: no declared inputs to smoke-test with")
    inputs = _inputs(handler, np.random.default_rng(seed))
    payload = _payload(inputs)
    start = time.perf_counter()
    try:
        answer = server.predict(name, payload)
    except Exception as exc:  # noqa: BLE001 - any TorchServe error is this model's failure
        return ModelCheck(name, "1", "READY", False, f"smoke inference failed: {str(exc)[:500]}")
    latency = round((time.perf_counter() - start) * 1000, 2)
    got = {k: np.asarray(v) for k, v in answer.items()} if isinstance(answer, dict) else {}
    missing = [t["name"] for t in handler.get("outputs", []) if t["name"] not in got]
    if missing:
        return ModelCheck(name, "1", "READY", False, f"answer lacks outputs {missing}: {str(answer)[:200]}")
    return judge_answer(name, "1", got, _reference(mar, handler, inputs), latency)


def validate_torchserve(output: Path, progress: Callable[[str], None] | None = None) -> ValidationReport:
    from repoforge.servers.process import ServerStartError
    from repoforge.servers.torchserve import TorchServeServer

    say = progress or (lambda _m: None)
    mars = sorted((output / "model-store").glob("*.mar"))
    say(f"starting TorchServe with {len(mars)} model(s) from {output}")
    server = TorchServeServer(output, workflows="all")  # token auth stays on; the server object sends the keys
    try:
        server.start()
    except ServerStartError as exc:
        failed = exc.failed_models or {m.stem: "did not start" for m in mars}
        return ValidationReport(str(output), "torchserve", [ModelCheck(n, "1", "UNAVAILABLE", False, f"{r}\n{exc.log_tail}")
                                                            for n, r in failed.items()])
    with server:
        say(f"TorchServe ready at {server.inference_url}")
        checks = []
        for mar in mars:
            checks.append(check_model(server, mar))
            c = checks[-1]
            say(("ok   " if c.ok else "FAIL ") + f"{c.name}: {c.message}")
        return ValidationReport(str(output), server.inference_url, checks)


