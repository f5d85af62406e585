"""What a model of the spec becomes on TorchServe: model-config.yaml, config.properties, workflow
specs, and a warning for every spec setting TorchServe has no equivalent for (never a silent loss)."""

from __future__ import annotations

import math
from typing import Any

from repoforge.plan import ModelPlan, RepositoryPlan
from repoforge.runtime.threads import AUTO, parse_setting
from repoforge.spec.load import LoadedSpec
from repoforge.spec.models import DEFAULTABLE, DynamicBatching, TensorSpec
from repoforge.templates import render

#: Seconds TorchServe waits for a worker's answer before failing the request (its own default is 120).
RESPONSE_TIMEOUT_S = 120
#: Entries of the handler's LRU result cache when `response_cache: true`.
CACHE_ENTRIES = 1024
#: The function nodes every repoforge workflow has.
REQUEST_NODE, RESPONSE_NODE = "rf_request", "rf_response"


def _set(loaded: LoadedSpec, index: int, field: str) -> bool:
    """The model, or `defaults:` for it, writes `field` (so a warning names what the user wrote)."""
    if field in loaded.spec.models[index].model_fields_set:
        return True
    return field in DEFAULTABLE and field in loaded.spec.defaults.model_fields_set


def workers(m: ModelPlan) -> int:
    groups = m.spec.instance_groups or []
    return sum(g.count for g in groups) if groups else 1


def device_type(m: ModelPlan, device: str) -> str:
    kinds = {g.kind for g in (m.spec.instance_groups or [])}
    if device == "gpu" and m.format != "python" and (not kinds or kinds & {"gpu", "auto"}):
        return "gpu"
    return "cpu"


def batch_settings(m: ModelPlan) -> tuple[int, int]:
    """(batchSize, maxBatchDelay ms). batchSize counts requests; each may carry up to max_batch_size rows."""
    if not m.dynamic_batching or m.max_batch_size <= 0:
        return 1, MIN_BATCH_DELAY_MS
    db = m.spec.dynamic_batching or DynamicBatching()
    return m.max_batch_size, ts_delay_ms(db.max_queue_delay_us)


# TorchServe 0.12 replaces maxBatchDelay 0 with its default of 100 ms (measured: a lone request took
# 115 ms instead of 3 ms), so "no added delay" is written as the smallest delay it keeps, 1 ms.
MIN_BATCH_DELAY_MS = 1


def ts_delay_ms(delay_us: int) -> int:
    return max(MIN_BATCH_DELAY_MS, math.ceil(delay_us / 1000))


def tensor_dict(t: TensorSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "dtype": t.dtype, "dims": list(t.dims)}
    if t.reshape is not None:
        d["reshape"] = list(t.reshape)
    if t.optional:
        d["optional"] = True
    return d


def model_config(m: ModelPlan, device: str, handler: dict[str, Any]) -> dict[str, Any]:
    """The archive's model-config.yaml: TorchServe's own keys plus the `handler:` section."""
    batch, delay = batch_settings(m)
    n = workers(m)
    cfg: dict[str, Any] = {
        "minWorkers": n,
        "maxWorkers": n,
        "batchSize": batch,
        "maxBatchDelay": delay,
        "responseTimeout": RESPONSE_TIMEOUT_S,
        "deviceType": device_type(m, device),
    }
    gpus = sorted({g_id for g in (m.spec.instance_groups or []) for g_id in (g.gpus or [])})
    if cfg["deviceType"] == "gpu" and gpus:
        cfg["deviceIds"] = gpus
    cfg["handler"] = handler
    return cfg


def _threads(value: Any) -> int:
    n = parse_setting(str(value))
    return 1 if n is None else n


def handler_section(
    m: ModelPlan, *, serialized_file: str | None, model_file: str | None, workflows: dict[str, Any]
) -> dict[str, Any]:
    params = dict(m.spec.parameters or {})
    section: dict[str, Any] = {
        "format": "features" if m.spec.plugin is not None else m.format,
        "serialized_file": serialized_file,
        "max_batch_size": m.max_batch_size,
        "inputs": [tensor_dict(t) for t in m.inputs],
        "outputs": [tensor_dict(t) for t in m.outputs],
        "cache_entries": CACHE_ENTRIES if m.spec.response_cache else 0,
        # TorchServe runs one worker per core by default, so `auto` leaves each worker one thread
        "intra_op_threads": _threads(params.get("intra_op_threads", AUTO)),
    }
    if model_file:
        section["model_file"] = model_file
    if m.spec.plugin is not None:  # the same declarative config the Triton features plugin runs
        section["plugin"] = m.spec.plugin.model_dump(mode="json")
    if params:
        section["parameters"] = params
    if workflows:
        section["workflows"] = workflows
    return section


def unsupported(loaded: LoadedSpec, m: ModelPlan, device: str, own_handler: bool) -> list[str]:
    """One warning per setting that TorchServe cannot honour, naming what happens instead."""
    texts = [
        *_model_setting_texts(loaded, m, own_handler),
        *_dynamic_batching_texts(m),
        *_instance_group_texts(m, device),
        *_tensor_texts(m),
    ]
    return [f"{m.name}: {text}" for text in texts]


def _model_setting_texts(loaded: LoadedSpec, m: ModelPlan, own_handler: bool) -> list[str]:
    """Model-wide settings; the Triton-only ones count only where the spec sets them, not their defaults."""
    i, s = m.index, m.spec
    w: list[str] = []
    if s.raw_config:
        w.append("raw_config holds Triton config fields; TorchServe has no use for them and they are left out")
    if s.response_cache and own_handler:
        w.append(
            "response_cache needs repoforge's handler (its per-worker LRU cache); your `handler:` serves without it"
        )
    elif s.response_cache:
        w.append(
            f"response_cache becomes the handler's in-memory LRU cache ({CACHE_ENTRIES} entries per worker, not shared "
            "between workers); TorchServe has no server-side response cache"
        )
    if _set(loaded, i, "warmup") and s.warmup is not None:
        w.append("warmup is not supported by TorchServe; the first request to each new worker pays the warm-up cost")
    if s.sequence_batching is not None:
        w.append(
            "sequence_batching is not translated: TorchServe has no implicit sequence state or control inputs; "
            "the model is served stateless, one request at a time per sequence"
        )
    if _set(loaded, i, "optimization") and s.optimization is not None:
        w.append("optimization (execution accelerators, CUDA graphs, pinned memory) is Triton-only and is left out")
    if _set(loaded, i, "version_policy") and s.version_policy is not None:
        w.append("version_policy is left out: TorchServe serves the one archived version")
    if len(m.versions) > 1:
        latest = max(m.versions)
        skipped = ", ".join(str(v) for v in sorted(m.versions) if v != latest)
        w.append(f"only the latest version ({latest}) is archived; version(s) {skipped} are left out")
    return w + _triton_only_texts(loaded, m)


def _triton_only_texts(loaded: LoadedSpec, m: ModelPlan) -> list[str]:
    """Model-wide Triton features with no TorchServe counterpart (agents, streaming, batch tensors, tags, backend)."""
    i, s = m.index, m.spec
    w: list[str] = []
    if _set(loaded, i, "model_repository_agents") and s.model_repository_agents:
        w.append("model_repository_agents (e.g. checksum) are Triton-only and are left out")
    if s.model_transaction_policy is not None and s.model_transaction_policy.decoupled:
        w.append("decoupled (streaming) responses are not translated; each request gets one response")
    if s.batch_inputs or s.batch_outputs:
        w.append("batch_inputs/batch_outputs are Triton-only and are left out")
    if s.metric_tags:
        w.append("metric_tags are left out; TorchServe labels metrics with the model name only")
    if s.backend and s.backend not in ("python",):
        w.append(f"backend {s.backend!r} is a Triton backend; TorchServe serves the model with a Python handler")
    if s.smoke is not None:
        w.append(
            "smoke.inputs is read by validate on --target triton only; TorchServe's validate sends random inputs of "
            "the declared shapes"
        )
    return w


def _dynamic_batching_texts(m: ModelPlan) -> list[str]:
    """TorchServe batches by batchSize and a whole-millisecond maxBatchDelay; the rest of Triton's batcher is lost."""
    db = m.spec.dynamic_batching
    w: list[str] = []
    if db is not None and m.dynamic_batching:
        if db.preferred_batch_sizes:
            w.append("preferred_batch_sizes are left out: TorchServe batches up to batchSize requests or maxBatchDelay")
        if db.priority_levels or db.queue_policy is not None or db.priority_queue_policy:
            w.append("queue policies and priority levels are Triton-only and are left out")
        if db.preserve_ordering:
            w.append("preserve_ordering is left out (each TorchServe response goes to its own connection anyway)")
        if db.max_queue_delay_us % 1000 or db.max_queue_delay_us == 0:
            w.append(
                f"max_queue_delay_us {db.max_queue_delay_us} becomes maxBatchDelay {ts_delay_ms(db.max_queue_delay_us)} ms "
                "(TorchServe counts whole milliseconds and turns 0 into 100 ms)"
            )
    return w


def _instance_group_texts(m: ModelPlan, device: str) -> list[str]:
    """TorchServe has workers of one device type, without Triton's per-group scheduling knobs."""
    groups = m.spec.instance_groups or []
    w: list[str] = []
    for g in groups:
        if g.rate_limiter is not None:
            w.append("instance group rate_limiter is Triton-only and is left out")
        if g.passive or g.host_policy:
            w.append("instance group passive/host_policy are Triton-only and are left out")
    if len({g.kind for g in groups}) > 1:
        w.append(
            f"instance groups of different kinds become {workers(m)} workers of deviceType {device_type(m, device)}"
        )
    return w


def _tensor_texts(m: ModelPlan) -> list[str]:
    """Per-tensor Triton attributes the handler does not carry over."""
    w: list[str] = []
    for kind in ("inputs", "outputs"):
        for t in getattr(m, kind):
            if t.is_shape_tensor or t.allow_ragged_batch:
                w.append(f"{kind[:-1]} '{t.name}': is_shape_tensor/allow_ragged_batch are Triton-only and are left out")
            if t.label_filename:
                w.append(f"output '{t.name}': label_filename is left out (the handler returns scores, not labels)")
    return w


def config_properties(
    models: list[str], *, grpc: tuple[int, int] = (7070, 7071), install_dependencies: bool = False
) -> str:
    """config.properties for this repository, to start TorchServe from the output folder:

    cd OUTPUT && torchserve --start --ncs --ts-config config.properties

    `install_dependencies`: some archive carries a requirements.txt, so TorchServe installs it per model.
    """
    return render(
        "config.properties",
        models=models,
        grpc_inference_port=grpc[0],
        grpc_management_port=grpc[1],
        install_py_dep_per_model="true" if install_dependencies else "false",
    )


def workflow_spec(
    ensemble: ModelPlan, plan: RepositoryPlan, device: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(workflow yaml, function-node wiring, per-step-model feed) for an ensemble whose plan is checked.

    Node names are the step model names; each step's inputs come from `rf_request` (ensemble inputs)
    or from the step that produces them; `rf_response` gathers the ensemble outputs.
    """
    steps = ensemble.spec.steps or []
    producer: dict[str, tuple[str, str]] = {}  # ensemble tensor → (node, model tensor name)
    for st in steps:
        for model_tensor, ens_tensor in st.outputs.items():
            producer[ens_tensor] = (st.model, model_tensor)
    ens_inputs = [t.name for t in ensemble.inputs]
    dag: dict[str, list[str]] = {REQUEST_NODE: []}
    feeds: dict[str, dict[str, Any]] = {}
    for st in steps:
        inputs: dict[str, list[str]] = {}
        parents: list[str] = []
        for model_tensor, ens_tensor in st.inputs.items():
            node, key = producer.get(ens_tensor, (REQUEST_NODE, ens_tensor))
            inputs[model_tensor] = [node, key]
            if node not in parents:
                parents.append(node)
        for p in parents:
            dag.setdefault(p, []).append(st.model)
        feeds[st.model] = {"parents": parents, "inputs": inputs}
    outputs = {t.name: list(producer[t.name]) for t in ensemble.outputs}
    response_parents: list[str] = []
    for node, _ in outputs.values():
        if node not in response_parents:
            response_parents.append(node)
    for node in response_parents:
        dag.setdefault(node, []).append(RESPONSE_NODE)
    for st in steps:  # a step whose outputs nobody reads still ends at the response node (one sink)
        if not dag.get(st.model):
            dag.setdefault(st.model, []).append(RESPONSE_NODE)
            if st.model not in response_parents:
                response_parents.append(st.model)
    models: dict[str, Any] = {
        "min-workers": 1,
        "max-workers": 1,
        "batch-size": 1,
        "max-batch-delay": 0,
        "retry-attempts": 1,
        "timeout-ms": RESPONSE_TIMEOUT_S * 1000,
    }
    for st in steps:
        m = plan.model(st.model)
        batch, delay = batch_settings(m)
        n = workers(m)
        models[st.model] = {
            "url": f"{st.model}.mar",
            "min-workers": n,
            "max-workers": n,
            "batch-size": batch,
            "max-batch-delay": delay,
        }
    spec = {"models": models, "dag": dag}
    wiring = {"inputs": ens_inputs, "outputs": outputs, "response_parents": response_parents}
    return spec, wiring, feeds
