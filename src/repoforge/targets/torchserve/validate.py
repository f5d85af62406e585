"""TorchServe's side of `repoforge validate`: start real TorchServe on it, smoke-infer every model
with inputs made from its archived config, and compare ONNX models with in-process onnxruntime; send
every workflow (.war, an ensemble) a request too, and compare its answer with its steps called one by one."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from repoforge import lazy
from repoforge.servers.process import ServerStartError
from repoforge.servers.torchserve import TorchServeServer
from repoforge.targets.answers import judge_answer
from repoforge.targets.types import ModelCheck, ValidationReport
from repoforge.triton.inputs import concrete_shape, random_array


def archived_config(mar: Path) -> dict[str, Any]:
    """The model-config.yaml repoforge put in a .mar (its `handler:` section lists inputs and outputs)."""
    with zipfile.ZipFile(mar) as z:
        return yaml.safe_load(z.read("model-config.yaml")) or {}


def _random_tensor(tensor: dict[str, Any], handler: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Random data for one of an archived model's declared inputs (its dtype; its dims, batched as the model is)."""
    return random_array(
        tensor["dtype"], concrete_shape(list(tensor["dims"]), int(handler.get("max_batch_size", 0))), rng
    )


def _inputs(handler: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {t["name"]: _random_tensor(t, handler, rng) for t in handler.get("inputs", [])}


def _payload(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The JSON body repoforge's handler reads: one key per input, rows as nested lists."""
    return {k: (v.astype(str) if v.dtype == object else v).tolist() for k, v in inputs.items()}


def random_request(handler: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """A valid request body for an archived model (random data of the right dtype and shape)."""
    return _payload(_inputs(handler, np.random.default_rng(seed)))


def _reference(mar: Path, handler: dict[str, Any], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    if handler.get("format") != "onnx":
        return None
    ort = lazy.onnxruntime()

    with zipfile.ZipFile(mar) as z:
        model = z.read(handler.get("serialized_file", "model.onnx"))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [t["name"] for t in handler.get("outputs", [])]
    return dict(zip(names, sess.run(names, inputs), strict=True))


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


def read_workflow(war: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A repoforge .war's DAG spec (node → model archive) and the WIRING its handler carries (the ensemble's
    input names, and each output's node and key)."""
    with zipfile.ZipFile(war) as z:
        entry = json.loads(z.read("WAR-INF/MANIFEST.json"))["workflow"]
        spec = yaml.safe_load(z.read(entry["specFile"])) or {}
        found = re.search(r"^WIRING = (\{.*\})$", z.read(entry["handler"]).decode(), re.MULTILINE)
    if found is None:
        raise ValueError(f"{war.name}: no WIRING in its handler (not a workflow repoforge built)")
    return spec, json.loads(found.group(1))


def _workflow_steps(spec: dict[str, Any], store: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each step node's model (the archive's own name, loaded on its own too) and archived handler section (its
    inputs, and where this workflow feeds each from)."""
    nodes = {n: c["url"] for n, c in (spec.get("models") or {}).items() if isinstance(c, dict) and "url" in c}
    return {n: (Path(url).stem, archived_config(store / url).get("handler", {})) for n, url in nodes.items()}


#: Why a workflow request may get no answer once. As its source reads, TorchServe 0.12's DagExecutor.invokeModel
#: queues a node's job before it sets the job's response promise, so a node that answers at once (repoforge's
#: request node takes ~1 ms) can have its reply dropped, and the request waits forever. It hit about 1 request in
#: 14 here; the next request answers.
LOST_REPLY = "TorchServe 0.12's workflow executor can drop a fast node's reply"


def check_workflow(server: Any, war: Path, store: Path, seed: int = 0, timeout: float = 30.0) -> ModelCheck:
    """POST /wfpredict/<workflow> with a random request shaped like the step inputs it feeds, then call the
    workflow's step models one by one on the same input: the answers must agree."""
    name = war.stem
    try:
        spec, wiring = read_workflow(war)
        steps = _workflow_steps(spec, store)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, yaml.YAMLError) as exc:
        return ModelCheck(name, "workflow", "REGISTERED", False, f"cannot read the workflow archive: {exc}")
    feeds = {n: h.get("workflows", {}).get(name, {}).get("inputs", {}) for n, (_, h) in steps.items()}
    rng = np.random.default_rng(seed)
    request: dict[str, np.ndarray] = {}
    for node, (_, handler) in steps.items():
        for t in handler.get("inputs", []):
            source, key = feeds[node].get(t["name"], (None, None))
            if source == "rf_request" and key not in request:
                request[key] = _random_tensor(t, handler, rng)
    if sorted(request) != sorted(wiring["inputs"]):
        return ModelCheck(
            name, "workflow", "REGISTERED", True, "custom handler steps: no declared inputs to smoke-test with"
        )
    payload = _payload(request)
    lost = ""
    for attempt in range(2):
        start = time.perf_counter()
        try:
            answer = server.wfpredict(name, payload, timeout=timeout)
            break
        except TimeoutError:
            if attempt:
                return ModelCheck(name, "workflow", "REGISTERED", False, f"no answer in {timeout:g} s, twice")
            lost = f" (the first request got no answer in {timeout:g} s: {LOST_REPLY}; the second answered)"
        except Exception as exc:  # noqa: BLE001 - any TorchServe error is this workflow's failure
            return ModelCheck(name, "workflow", "REGISTERED", False, f"smoke inference failed: {str(exc)[:500]}")
    latency = round((time.perf_counter() - start) * 1000, 2)
    outputs = list(wiring["outputs"])
    if not isinstance(answer, dict) or any(o not in answer for o in outputs):
        # TorchServe answers a workflow with 200 whatever its nodes say: an error travels as the body.
        why = answer.get("message") if isinstance(answer, dict) and "message" in answer else str(answer)[:200]
        return ModelCheck(name, "workflow", "REGISTERED", False, f"answer lacks outputs {outputs}: {why}")
    got = {o: np.asarray(answer[o]) for o in outputs}
    if not all(feeds.values()):  # a custom-handler step: its inputs are not declared, so it cannot be fed by hand
        check = judge_answer(name, "workflow", got, None, latency)
        return dataclasses.replace(check, state="REGISTERED", message=check.message + lost)
    try:
        expected = _steps_one_by_one(server, {n: m for n, (m, _) in steps.items()}, feeds, payload, wiring["outputs"])
    except Exception as exc:  # noqa: BLE001 - a step that fails alone is this workflow's failure too
        return ModelCheck(
            name, "workflow", "REGISTERED", False, f"answered, but a step failed when called alone: {str(exc)[:500]}"
        )
    check = judge_answer(name, "workflow", got, {o: np.asarray(v) for o, v in expected.items()}, latency)
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in got.items())
    message = (
        f"answered {shapes}; equals its steps called one by one (max abs err {check.max_abs_err:.2e})"
        if check.ok
        else f"differs from its steps called one by one: max abs err {check.max_abs_err:.3e}"
    )
    return dataclasses.replace(check, state="REGISTERED", message=message + lost)


def _steps_one_by_one(
    server: Any,
    models: dict[str, str],
    feeds: dict[str, dict[str, list[str]]],
    payload: dict[str, Any],
    outputs: dict[str, list[str]],
) -> dict[str, Any]:
    """The workflow computed by hand: each step's model called on its own (not the workflow's `<wf>__<node>`
    copy, which reads its parents' outputs) once its inputs exist, fed as the wiring says; returns the outputs."""
    results: dict[str, dict[str, Any]] = {"rf_request": payload}
    pending = dict(feeds)
    while pending:
        ready = [n for n, f in pending.items() if all(src in results for src, _ in f.values())]
        if not ready:
            raise ValueError(f"steps {sorted(pending)} wait on inputs no step produces")
        for node in ready:
            step_input = {inp: results[src][key] for inp, (src, key) in pending.pop(node).items()}
            results[node] = server.predict(models[node], step_input)
    return {o: results[node][key] for o, (node, key) in outputs.items()}


def validate_torchserve(output: Path, progress: Callable[[str], None] | None = None) -> ValidationReport:
    say = progress or (lambda _m: None)
    mars = sorted((output / "model-store").glob("*.mar"))
    say(f"starting TorchServe with {len(mars)} model(s) from {output}")
    server = TorchServeServer(output, workflows="all")  # token auth stays on; the server object sends the keys
    try:
        server.start()
    except ServerStartError as exc:
        failed = exc.failed_models or {m.stem: "did not start" for m in mars}
        return ValidationReport(
            str(output),
            "torchserve",
            [ModelCheck(n, "1", "UNAVAILABLE", False, f"{r}\n{exc.log_tail}") for n, r in failed.items()],
        )
    with server:
        say(f"TorchServe ready at {server.inference_url}")
        checks = []
        for mar in mars:
            checks.append(check_model(server, mar))
            c = checks[-1]
            say(("ok   " if c.ok else "FAIL ") + f"{c.name}: {c.message}")
        for war in (server.workflow_store / w for w in server.workflows):
            checks.append(check_workflow(server, war, server.model_store))
            c = checks[-1]
            say(("ok   " if c.ok else "FAIL ") + f"{c.name} (workflow): {c.message}")
        return ValidationReport(str(output), server.inference_url, checks)
