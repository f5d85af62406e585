"""`repoforge validate`: load a repository in a real Triton, check every model is READY, send each a
smoke inference made from its config, and compare ONNX models with in-process onnxruntime."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from repoforge.errors import ServeError
from repoforge.triton.inputs import make_inputs, triton_dtype
from repoforge.triton.reader import RepoModel, read_repository, uses_response_cache

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


@dataclass
class ModelCheck:
    name: str
    version: str
    state: str
    ok: bool
    message: str = ""
    max_abs_err: float | None = None
    latency_ms: float | None = None


@dataclass
class ValidationReport:
    repository: str
    server: str
    checks: list[ModelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"repository": self.repository, "server": self.server, "ok": self.ok, "models": [asdict(c) for c in self.checks]}

    def failures(self) -> list[ModelCheck]:
        return [c for c in self.checks if not c.ok]


def infer(url: str, model: RepoModel, inputs: dict[str, np.ndarray], version: str = "",
          grpc_url: str | None = None) -> dict[str, np.ndarray]:
    """One request over HTTP (gRPC streaming for decoupled models, which HTTP cannot serve)."""
    outputs = [o.name for o in model.config.output]
    seq = {"sequence_id": 1, "sequence_start": True, "sequence_end": True} if model.config.HasField("sequence_batching") else {}
    if model.decoupled:
        if grpc_url is None:
            raise ServeError(f"{model.name} is decoupled (streaming): HTTP cannot serve it; pass the server's gRPC URL")
        return _infer_decoupled(grpc_url, model, inputs, version, seq)[0]
    import tritonclient.http as http

    client = http.InferenceServerClient(url, network_timeout=120.0, connection_timeout=60.0)
    try:
        reqs = []
        for name, arr in inputs.items():
            t = http.InferInput(name, list(arr.shape), _wire_dtype(model, name))
            t.set_data_from_numpy(arr, binary_data=True)
            reqs.append(t)
        res = client.infer(model.name, reqs, model_version=version, outputs=[http.InferRequestedOutput(o) for o in outputs], **seq)
        return {o: res.as_numpy(o) for o in outputs}
    finally:
        client.close()


def _wire_dtype(model: RepoModel, name: str) -> str:
    return next(triton_dtype(t.data_type) for t in model.config.input if t.name == name)


def _infer_decoupled(grpc_url: str, model: RepoModel, inputs: dict[str, np.ndarray], version: str,
                     seq: dict[str, Any], timeout: float = 60.0) -> list[dict[str, np.ndarray]]:
    """Every response of one streamed request, up to the final flag (empty final response included by Triton)."""
    import queue

    import tritonclient.grpc as grpc

    results: queue.Queue[Any] = queue.Queue()
    client = grpc.InferenceServerClient(grpc_url)
    try:
        client.start_stream(callback=lambda result, error: results.put(error if error is not None else result))
        reqs = []
        for name, arr in inputs.items():
            t = grpc.InferInput(name, list(arr.shape), _wire_dtype(model, name))
            t.set_data_from_numpy(arr)
            reqs.append(t)
        client.async_stream_infer(model.name, reqs, model_version=version, enable_empty_final_response=True, **seq)
        got: list[dict[str, np.ndarray]] = []
        while True:
            item = results.get(timeout=timeout)
            if isinstance(item, Exception):
                raise item
            resp = item.get_response()
            data = {o.name: item.as_numpy(o.name) for o in resp.outputs}
            if data:
                got.append(data)
            if resp.parameters["triton_final_response"].bool_param:
                break
        if not got:
            raise ServeError(f"{model.name}: the stream ended without a response carrying outputs")
        return got
    finally:
        client.stop_stream()
        client.close()


def _reference(model: RepoModel, version: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """In-process onnxruntime answer for an ONNX model version, or None for other formats."""
    path = model.path / str(version) / "model.onnx"
    if not path.exists():
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.config.output]
    return dict(zip(names, sess.run(names, inputs)))


def check_models(models: list[RepoModel], url: str, states: list[dict[str, str]],
                 progress: Callable[[str], None] | None = None, grpc_url: str | None = None) -> list[ModelCheck]:
    """READY check, smoke inference and (ONNX) comparison for every model version the server reports."""
    say = progress or (lambda _m: None)
    by_name: dict[str, list[dict[str, str]]] = {}
    for s in states:
        by_name.setdefault(s["name"], []).append(s)
    checks = []
    for m in models:
        rows = by_name.get(m.name) or [{"version": "", "state": "MISSING", "reason": "the server does not list this model"}]
        for row in rows:
            if row["state"] != "READY":
                reason = row.get("reason") or "not loaded"
                checks.append(ModelCheck(m.name, row["version"], row["state"] or "UNAVAILABLE", False, reason))
                say(f"FAIL {m.name} v{row['version']}: {row['state']}: {reason}")
                continue
            checks.append(_smoke(m, url, row["version"], grpc_url))
            c = checks[-1]
            say(("ok   " if c.ok else "FAIL ") + f"{m.name} v{c.version}: {c.message}")
    return checks


def _smoke(m: RepoModel, url: str, version: str, grpc_url: str | None) -> ModelCheck:
    inputs = make_inputs(m.config, batch_size=1, seed=0)
    start = time.perf_counter()
    try:
        got = infer(url, m, inputs, version, grpc_url)
    except Exception as exc:  # noqa: BLE001 - any client/server error is this model's failure
        return ModelCheck(m.name, version, "READY", False, f"smoke inference failed: {exc}")
    latency = (time.perf_counter() - start) * 1000
    ref = _reference(m, int(version), inputs) if version.isdigit() else None
    return judge_answer(m.name, version, got, ref, round(latency, 2))


def judge_answer(name: str, version: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray] | None,
                 latency_ms: float) -> ModelCheck:
    """A READY model's smoke answer: ok as is, or compared with in-process onnxruntime when there is a reference
    (shared by the Triton and TorchServe validations, so both judge with the same tolerances)."""
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in got.items())
    if ref is None:
        return ModelCheck(name, version, "READY", True, f"answered {shapes}", latency_ms=latency_ms)
    err = max(float(np.max(np.abs(got[k].astype(np.float64) - ref[k].astype(np.float64)))) if got[k].size else 0.0 for k in ref)
    close = all(np.allclose(got[k], ref[k], rtol=1e-4, atol=1e-5) for k in ref)
    msg = f"answered {shapes}; matches onnxruntime (max abs err {err:.2e})" if close else f"differs from in-process onnxruntime: max abs err {err:.3e}"
    return ModelCheck(name, version, "READY", close, msg, max_abs_err=err, latency_ms=latency_ms)


def validate(repository: str | Path, *, url: str | None = None, grpc_url: str | None = None,
             tritonserver: str | Path | None = None, progress: Callable[[str], None] | None = None) -> ValidationReport:
    """Validate `repository` in a Triton at `url`, or in one started (and stopped) for the purpose."""
    from repoforge.servers.triton import TritonServer

    repo = Path(repository)
    say = progress or (lambda _m: None)
    from repoforge.torchserve.builder import looks_like_torchserve_output

    if url is None and looks_like_torchserve_output(repo):
        from repoforge.torchserve.validate import validate_torchserve

        return validate_torchserve(repo, say)
    models = read_repository(repo)
    from repoforge.lint import lint_repository

    lint = lint_repository(repo)
    for f in lint.warnings:
        say(f"lint warning: {f}")
    if lint.errors:  # Triton would refuse these: say why statically instead of starting a server to find out
        return ValidationReport(str(repo), "lint", [ModelCheck(f.model, "", "LINT", False, f"{f.field}: {f.message}") for f in lint.errors])
    if url is not None:
        return ValidationReport(str(repo), url, check_models(models, url, _states_from_url(url), say, grpc_url))
    server = TritonServer(repo, exit_on_error=False, strict_readiness=False, binary=tritonserver,
                          cache_size_bytes=DEFAULT_CACHE_BYTES if uses_response_cache(models) else None)
    say(f"starting tritonserver with {len(models)} model(s) from {repo}")
    with server:  # starts it; stops it even when a check raises
        say(f"tritonserver ready at http://{server.http_url}")
        report = ValidationReport(str(repo), server.http_url, check_models(models, server.http_url, server.model_states(), say,
                                                                          server.grpc_url))
        for c in report.failures():
            if c.state != "READY":
                c.message += "\n" + server.log_tail(15)
        return report


def _states_from_url(url: str) -> list[dict[str, str]]:
    import tritonclient.http as http

    client = http.InferenceServerClient(url)
    try:
        rows = client.get_model_repository_index()
    except Exception as exc:  # noqa: BLE001
        raise ServeError(f"cannot reach Triton at {url}: {exc}; is the server running?") from None
    finally:
        client.close()
    return [{"name": r.get("name", ""), "version": str(r.get("version", "")), "state": r.get("state", ""),
             "reason": r.get("reason", "")} for r in rows]
