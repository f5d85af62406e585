"""Triton's side of `repoforge validate`: load a repository in a real Triton, check every model is READY, send each a
smoke inference made from the config the server serves (auto-completed fields included), and compare
ONNX models with in-process onnxruntime and with onnx's own reference implementation."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from repoforge import lazy
from repoforge.errors import ServeError
from repoforge.lint import lint_repository
from repoforge.servers.discover import triton_ports
from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer
from repoforge.spec.models import SMOKE_INPUTS
from repoforge.targets.answers import judge_answer
from repoforge.targets.types import SMOKE_TIMEOUT_S, ModelCheck, ValidationReport
from repoforge.triton.client import grpc_client, grpcclient, http_client, httpclient, repository_index, served_config
from repoforge.triton.inputs import make_inputs, triton_dtype
from repoforge.triton.reader import RepoModel, read_repository, uses_response_cache
from repoforge.triton.sequence import control_tensors, initial_states, is_sequence, state_outputs, steps

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = SMOKE_TIMEOUT_S
#: onnx.reference runs in numpy, slowly: bigger models are compared with onnxruntime only.
INDEPENDENT_MAX_BYTES = 64 * 1024 * 1024


class NoAnswer(ServeError):
    """The server sent no (final) answer within the model's bound."""

    def __init__(self, timeout: float, detail: str = "") -> None:
        super().__init__(f"no answer in {timeout:g} s" + (f" ({detail})" if detail else ""))


def infer(
    url: str,
    model: RepoModel,
    inputs: dict[str, np.ndarray],
    version: str = "",
    grpc_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    sequence: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """One request over HTTP (gRPC streaming for decoupled models, which HTTP cannot serve), answered within
    `timeout` seconds or NoAnswer. Outputs the response leaves out are left out of the result. `sequence`: the
    request's sequence flags (sequence_id, sequence_start, sequence_end); a sequence model without them gets a
    sequence of this one request."""
    outputs = [o.name for o in model.config.output]
    seq = sequence or (
        {"sequence_id": 1, "sequence_start": True, "sequence_end": True}
        if model.config.HasField("sequence_batching")
        else {}
    )
    if model.decoupled:
        if grpc_url is None:
            raise ServeError(f"{model.name} is decoupled (streaming): HTTP cannot serve it; pass the server's gRPC URL")
        return _infer_decoupled(grpc_url, model, inputs, version, seq, timeout)[0]
    with http_client(url, timeout) as client:  # closing it lets the server shut down after a request we gave up on
        reqs = []
        for name, arr in inputs.items():
            t = httpclient.InferInput(name, list(arr.shape), _wire_dtype(model, name))
            t.set_data_from_numpy(arr, binary_data=True)
            reqs.append(t)
        try:
            res = client.infer(
                model.name,
                reqs,
                model_version=version,
                outputs=[httpclient.InferRequestedOutput(o) for o in outputs],
                **seq,
            )
        except TimeoutError:
            raise NoAnswer(timeout) from None
        got = {o: res.as_numpy(o) for o in outputs}
        return {o: a for o, a in got.items() if a is not None}


def _wire_dtype(model: RepoModel, name: str) -> str:
    return next(triton_dtype(t.data_type) for t in model.config.input if t.name == name)


def _infer_decoupled(
    grpc_url: str,
    model: RepoModel,
    inputs: dict[str, np.ndarray],
    version: str,
    seq: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, np.ndarray]]:
    """Every response of one streamed request, up to the final flag (empty final response included by Triton).
    One deadline covers them all: a stream that trickles forever, or never sends its final flag, is NoAnswer."""
    results: queue.Queue[Any] = queue.Queue()
    deadline = time.monotonic() + timeout
    finished = False
    got: list[dict[str, np.ndarray]] = []
    with grpc_client(grpc_url) as client:
        try:
            _stream(client, model, inputs, version, seq, timeout, results)
            while not finished:
                try:
                    item = results.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    item = None
                if item is None or (isinstance(item, Exception) and "DEADLINE_EXCEEDED" in str(_status(item))):
                    raise NoAnswer(timeout, f"the stream sent {len(got)} response(s) but not its final flag")
                if isinstance(item, Exception):
                    raise item
                resp = item.get_response()
                data = {o.name: item.as_numpy(o.name) for o in resp.outputs}
                if data:
                    got.append(data)
                finished = resp.parameters["triton_final_response"].bool_param
            if not got:
                raise ServeError(f"{model.name}: the stream ended without a response carrying outputs")
            return got
        finally:
            # Without cancelling, closing waits for the server to end the stream: forever for a stuck model.
            client.stop_stream(cancel_requests=not finished)


def _stream(
    client: Any,
    model: RepoModel,
    inputs: dict[str, np.ndarray],
    version: str,
    seq: dict[str, Any],
    timeout: float,
    results: queue.Queue[Any],
) -> None:
    """Open the stream (answers go to `results`) and send the one request on it."""
    # stream_timeout: gRPC's own deadline on the stream, so the server stops streaming to us too
    client.start_stream(
        callback=lambda result, error: results.put(error if error is not None else result), stream_timeout=timeout
    )
    reqs = []
    for name, arr in inputs.items():
        t = grpcclient.InferInput(name, list(arr.shape), _wire_dtype(model, name))
        t.set_data_from_numpy(arr)
        reqs.append(t)
    client.async_stream_infer(model.name, reqs, model_version=version, enable_empty_final_response=True, **seq)


def _status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


def _models_own_error(exc: BaseException) -> bool:
    """True when the model's code answered with an error (Triton accepted the request and ran the model), as
    opposed to Triton refusing the request itself ('[request id: ...] unexpected shape ...': a wiring fault)."""
    text = str(exc)
    if "Failed to process the request(s)" in text:  # the python backend's wrapper around a model's exception
        return True
    return _status(exc) in ("500", "StatusCode.INTERNAL") and "[request id:" not in text


def effective_config(url: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> mc.ModelConfig:
    """The config the server serves (`/v2/models/<m>/config`): what auto-complete filled in (a python model's
    `auto_complete_config`, inputs a config left out, a decoupled transaction policy) is in it, the disk's is not."""
    try:
        return served_config(url, name, timeout=timeout)
    except TimeoutError:
        raise NoAnswer(timeout, "reading its config") from None


def smoke_inputs(model: RepoModel, seed: int = 0) -> tuple[dict[str, np.ndarray], bool]:
    """The smoke request: the model folder's smoke_inputs.npz (the spec's `smoke.inputs`) where there is one,
    random data made from the config for every input it leaves out; and whether the file was used."""
    inputs = make_inputs(model.config, batch_size=1, seed=seed)
    path = model.path / SMOKE_INPUTS
    if not path.is_file():
        return inputs, False
    wanted = {t.name: triton_dtype(t.data_type) for t in model.config.input}
    with np.load(path, allow_pickle=False) as npz:
        given = {k: npz[k] for k in npz.files}
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        raise ServeError(
            f"{path} names {', '.join(unknown)}, which the model does not take; inputs: {', '.join(sorted(wanted))}"
        )
    for name, arr in given.items():
        inputs[name] = arr.astype(np.object_) if wanted[name] == "BYTES" and arr.dtype.kind in "SU" else arr
    return inputs, True


def _reference(
    model: RepoModel, version: int, inputs: dict[str, np.ndarray], extra_outputs: list[str] | None = None
) -> dict[str, np.ndarray] | None:
    """In-process onnxruntime answer for an ONNX model version (the config's outputs, and `extra_outputs`: a
    sequence model's state outputs), or None for other formats."""
    path = model.path / str(version) / "model.onnx"
    if not path.exists():
        return None
    ort = lazy.onnxruntime()

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.config.output] + list(extra_outputs or [])
    return dict(zip(names, sess.run(names, inputs), strict=True))


def independent_reference(
    path: Path, names: list[str], inputs: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """`onnx.reference.ReferenceEvaluator`'s answer: numpy code written apart from onnxruntime, so agreeing with
    it checks the numbers and not only the wiring (on CPU Triton runs onnxruntime too). None, and why, where it
    cannot run the model (an op it lacks, e.g. a com.microsoft contrib op) or the model is too big for it."""
    if path.stat().st_size > INDEPENDENT_MAX_BYTES:
        return None, f"onnx.reference skipped: the model is over {INDEPENDENT_MAX_BYTES >> 20} MiB"
    ReferenceEvaluator = lazy.onnx_reference().ReferenceEvaluator

    try:
        outs = ReferenceEvaluator(str(path)).run(names, inputs)
    except Exception as exc:  # noqa: BLE001 - unsupported ops surface as several exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"onnx.reference cannot run it ({first[:160]})"
    return {n: np.asarray(o) for n, o in zip(names, outs, strict=True)}, ""


def check_models(
    models: list[RepoModel],
    url: str,
    states: list[dict[str, str]],
    progress: Callable[[str], None] | None = None,
    grpc_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[ModelCheck]:
    """READY check, smoke inference and (ONNX) comparison for every model version the server reports; each
    model gets `timeout` seconds to answer, so one that never does fails its own row and the rest go on."""
    say = progress or (lambda _m: None)
    by_name: dict[str, list[dict[str, str]]] = {}
    for s in states:
        by_name.setdefault(s["name"], []).append(s)
    checks = []
    for m in models:
        rows = by_name.get(m.name) or [
            {"version": "", "state": "MISSING", "reason": "the server does not list this model"}
        ]
        served: RepoModel | str | None = None
        for row in rows:
            if row["state"] != "READY":
                reason = row.get("reason") or "not loaded"
                checks.append(ModelCheck(m.name, row["version"], row["state"] or "UNAVAILABLE", False, reason))
                say(f"FAIL {m.name} v{row['version']}: {row['state']}: {reason}")
                continue
            if served is None:
                served = _served(m, url, timeout)
            if isinstance(served, str):
                checks.append(ModelCheck(m.name, row["version"], "READY", False, served))
            else:
                checks.append(_smoke(served, url, row["version"], grpc_url, timeout))
            c = checks[-1]
            say(("ok   " if c.ok else "FAIL ") + f"{m.name} v{c.version}: {c.message}")
    return checks


def _served(m: RepoModel, url: str, timeout: float) -> RepoModel | str:
    """`m` with the server's effective config, or why it could not be read."""
    try:
        return replace(m, config=effective_config(url, m.name, timeout))
    except Exception as exc:  # noqa: BLE001 - this model's row, not the whole report
        return f"cannot read its config from the server: {exc}"


def _smoke(
    m: RepoModel, url: str, version: str, grpc_url: str | None, timeout: float = DEFAULT_TIMEOUT_S
) -> ModelCheck:
    try:
        inputs, given = smoke_inputs(m)
    except (ServeError, OSError, ValueError) as exc:
        return ModelCheck(m.name, version, "READY", False, f"smoke inputs: {exc}")
    if is_sequence(m.config):
        return _smoke_sequence(m, url, version, grpc_url, timeout, inputs, given)
    start = time.perf_counter()
    got = _ask(m, url, version, grpc_url, timeout, inputs, given)
    if isinstance(got, ModelCheck):
        return got
    latency = round((time.perf_counter() - start) * 1000, 2)
    missing = _missing(m, version, got, latency)
    if missing is not None:
        return missing
    ref = _reference(m, int(version), inputs) if version.isdigit() else None
    independent, note = None, ""
    if ref is not None:
        independent, note = independent_reference(m.path / version / "model.onnx", list(ref), inputs)
    check = judge_answer(m.name, version, got, ref, latency, independent=independent, note=note)
    if given:
        check.message += f" (smoke inputs from {SMOKE_INPUTS})"
    return check


def _ask(
    m: RepoModel,
    url: str,
    version: str,
    grpc_url: str | None,
    timeout: float,
    inputs: dict[str, np.ndarray],
    given: bool,
    sequence: dict[str, Any] | None = None,
) -> dict[str, np.ndarray] | ModelCheck:
    """The model's answer to one request, or its failed row saying whose fault the failure was."""
    try:
        return infer(url, m, inputs, version, grpc_url, timeout, sequence)
    except NoAnswer as exc:
        return ModelCheck(m.name, version, "READY", False, str(exc))
    except Exception as exc:  # noqa: BLE001 - any client/server error is this model's failure
        if _models_own_error(exc):
            hint = (
                ""
                if given
                else "; if it only takes certain values, give it smoke inputs: `smoke: {inputs: file.npz}` in the spec"
            )
            return ModelCheck(
                m.name,
                version,
                "READY",
                False,
                f"the model answered with an error (Triton accepted the "
                f"{'given' if given else 'random'} smoke request, the model's own code refused it): {exc}{hint}",
            )
        return ModelCheck(m.name, version, "READY", False, f"smoke inference failed: {exc}")


def _missing(m: RepoModel, version: str, got: dict[str, np.ndarray], latency: float) -> ModelCheck | None:
    missing = [o.name for o in m.config.output if o.name not in got]
    if not missing:
        return None
    return ModelCheck(
        m.name,
        version,
        "READY",
        False,
        f"output{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing from the response",
        latency_ms=latency,
    )


def _smoke_sequence(
    m: RepoModel,
    url: str,
    version: str,
    grpc_url: str | None,
    timeout: float,
    inputs: dict[str, np.ndarray],
    given: bool,
) -> ModelCheck:
    """A sequence model gets a real sequence: one correlation id, START, a step, END (each request over the gRPC
    stream for a decoupled model). An ONNX version's answers are compared request by request with onnxruntime
    given the control tensors (and implicit state) Triton's sequence batcher feeds the model."""
    cfg = m.config
    plan = steps(cfg, int(np.random.default_rng().integers(1 << 20, 1 << 30)))
    path = m.path / version / "model.onnx"
    states = initial_states(cfg) if version.isdigit() and path.is_file() else None
    feeds = state_outputs(cfg)
    latency, errs, last = 0.0, [], None
    for step in plan:
        label = f"request {step.index + 1} of {len(plan)} of sequence {step.correlation_id}"
        data = inputs if given else make_inputs(cfg, batch_size=1, seed=step.index)
        start = time.perf_counter()
        got = _ask(m, url, version, grpc_url, timeout, data, given, step.client_flags())
        if isinstance(got, ModelCheck):
            got.message = f"{label}: {got.message}"
            return got
        took = round((time.perf_counter() - start) * 1000, 2)
        latency += took
        missing = _missing(m, version, got, took)
        if missing is not None:
            missing.message = f"{label}: {missing.message}"
            return missing
        ref = independent = None
        note = ""
        if states is not None:
            feed = {**data, **control_tensors(cfg, step), **states}
            full = _reference(m, int(version), feed, list(feeds))
            assert full is not None  # the file exists
            states = {feeds[k]: v for k, v in full.items() if k in feeds}
            ref = {k: v for k, v in full.items() if k not in feeds}
            theirs, note = independent_reference(path, list(full), feed)
            independent = {k: v for k, v in theirs.items() if k not in feeds} if theirs is not None else None
        last = judge_answer(m.name, version, got, ref, took, independent=independent, note=note)
        if not last.ok:
            last.message = f"{label}: {last.message}"
            return last
        if last.max_abs_err is not None:
            errs.append(last.max_abs_err)
    assert last is not None
    middle = len(plan) - 2
    last.message = (
        f"sequence of {len(plan)} requests (correlation id {plan[0].correlation_id}: START, "
        f"{middle} step{'s' if middle != 1 else ''}, END); "
        + last.message
        + ("" if states is not None or not path.is_file() else "; an implicit state starts from a file: not compared")
    )
    last.latency_ms = round(latency / len(plan), 2)
    last.max_abs_err = max(errs) if errs else None
    if given:
        last.message += f" (smoke inputs from {SMOKE_INPUTS})"
    return last


def validate_triton(
    repository: str | Path,
    *,
    url: str | None = None,
    grpc_url: str | None = None,
    tritonserver: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> ValidationReport:
    """The Triton side of `validate`: lint first, then every model READY and answering in a real tritonserver."""
    repo = Path(repository)
    say = progress or (lambda _m: None)
    models = read_repository(repo, unconfigured=True)  # the server's configs are read for each model
    lint = lint_repository(repo)
    for f in lint.warnings:
        say(f"lint warning: {f}")
    if lint.errors:  # Triton would refuse these: say why statically instead of starting a server to find out
        return ValidationReport(
            str(repo), "lint", [ModelCheck(f.model, "", "LINT", False, f"{f.field}: {f.message}") for f in lint.errors]
        )
    if url is not None:
        if grpc_url is None:  # decoupled models need it: read it from the server where it runs on this machine
            found = triton_ports(url.removeprefix("http://"))
            if found is not None and found.grpc is not None:
                grpc_url = f"{url.removeprefix('http://').rpartition(':')[0]}:{found.grpc}"
        return ValidationReport(
            str(repo), url, check_models(models, url, _states_from_url(url, timeout), say, grpc_url, timeout)
        )
    server = TritonServer(
        repo,
        exit_on_error=False,
        strict_readiness=False,
        binary=tritonserver,
        cache_size_bytes=DEFAULT_CACHE_BYTES if uses_response_cache(models) else None,
        exit_timeout_s=RUN_EXIT_TIMEOUT_S,  # a slow model's smoke request left behind does not hold the exit
    )
    say(f"starting tritonserver with {len(models)} model(s) from {repo}")
    with server:  # starts it; stops it even when a check raises
        say(f"tritonserver ready at http://{server.http_url}")
        report = ValidationReport(
            str(repo),
            server.http_url,
            check_models(models, server.http_url, server.model_states(), say, server.grpc_url, timeout),
        )
        for c in report.failures():
            if c.state != "READY":
                c.message += "\n" + server.log_tail(15)
        return report


def _states_from_url(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, str]]:
    try:
        return repository_index(url, timeout)
    except Exception as exc:  # noqa: BLE001
        raise ServeError(f"cannot reach Triton at {url}: {exc}; is the server running?") from None
