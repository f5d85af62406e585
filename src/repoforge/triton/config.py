"""ModelPlan → Triton `ModelConfig` protobuf. Configs are always built as the message and written with
`text_format`, never assembled as text, so every field name and enum is checked by Triton's own schema."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import MODEL_FILE_PARAMETER, PLUGIN_PARAMETER, RUNNER_PARAMETER, Device
from repoforge.plan_base import ModelPlan
from repoforge.spec.models import GPU_ONLY_OPTIMIZATION, Optimization, QueuePolicy, TensorSpec, VersionPolicy
from repoforge.triton.names import (
    INSTANCE_KIND,
    INTRA_OP_THREADS,
    OPTIMIZATION_PRIORITY,
    SEQUENCE_CONTROL,
    THREAD_PARAMETERS,
)

# One onnxruntime thread per instance: on small CPU hosts ORT's spinning pool fights Triton and the
# clients for cores (measured 1.4x faster under load, shared/notes/perf-anchors.md).
DEFAULT_INTRA_OP_THREADS = "auto"  # the CPU runners decide at load time: repoforge.runtime.threads


def dtype_enum(dtype: str) -> int:
    return mc.DataType.Value(f"TYPE_{dtype.upper()}" if dtype.upper() != "BYTES" else "TYPE_STRING")


def _tensor(msg: mc.ModelInput | mc.ModelOutput, t: TensorSpec) -> None:
    msg.name = t.name
    msg.data_type = dtype_enum(t.dtype)
    msg.dims.extend(t.dims)
    if t.reshape is not None:
        msg.reshape.SetInParent()  # an empty reshape (a scalar for the model) is still a reshape
        msg.reshape.shape.extend(t.reshape)
    if t.is_shape_tensor:
        msg.is_shape_tensor = True
    if isinstance(msg, mc.ModelInput):
        if t.format is not None:
            msg.format = mc.ModelInput.Format.Value(f"FORMAT_{t.format.upper()}")
        if t.optional:
            msg.optional = True
        if t.allow_ragged_batch:
            msg.allow_ragged_batch = True
    elif t.label_filename:
        msg.label_filename = Path(t.label_filename).name  # shipped into the model folder by the writer


def _queue_policy(msg: mc.ModelQueuePolicy, q: QueuePolicy) -> None:
    msg.timeout_action = mc.ModelQueuePolicy.REJECT if q.timeout_action == "reject" else mc.ModelQueuePolicy.DELAY
    msg.default_timeout_microseconds = q.timeout_us
    msg.allow_timeout_override = q.allow_timeout_override
    msg.max_queue_size = q.max_queue_size


def _version_policy(msg: mc.ModelVersionPolicy, v: VersionPolicy) -> None:
    if v.latest is not None:
        msg.latest.num_versions = v.latest
    elif v.all:
        msg.all.SetInParent()
    elif v.specific is not None:
        msg.specific.versions.extend(v.specific)


def _optimization(msg: mc.ModelOptimizationPolicy, o: Optimization, device: Device) -> None:
    """The spec's optimization block; a --device cpu build leaves out what only a GPU uses (Optimization.gpu_only)."""
    if device != "gpu":
        o = o.model_copy(update=dict.fromkeys(GPU_ONLY_OPTIMIZATION))
        if o.execution_accelerators is not None:
            o.execution_accelerators = o.execution_accelerators.model_copy(update={"gpu": []})
    if o.priority:
        msg.priority = OPTIMIZATION_PRIORITY[o.priority]
    if o.graph_level is not None:
        msg.graph.level = o.graph_level
    if o.cuda_graphs is not None:
        msg.cuda.graphs = o.cuda_graphs
    if o.cuda_busy_wait_events is not None:
        msg.cuda.busy_wait_events = o.cuda_busy_wait_events
    if o.cuda_output_copy_stream is not None:
        msg.cuda.output_copy_stream = o.cuda_output_copy_stream
    if o.execution_accelerators is not None:
        for side, accs in (("gpu", o.execution_accelerators.gpu), ("cpu", o.execution_accelerators.cpu)):
            target = getattr(msg.execution_accelerators, f"{side}_execution_accelerator")
            for a in accs:
                acc = target.add(name=a.name)
                for k, v in sorted(a.parameters.items()):
                    acc.parameters[k] = _param_str(v)
    if o.pinned_memory is not None:
        if o.pinned_memory.input is not None:
            msg.input_pinned_memory.enable = o.pinned_memory.input
        if o.pinned_memory.output is not None:
            msg.output_pinned_memory.enable = o.pinned_memory.output
    if o.gather_kernel_buffer_threshold is not None:
        msg.gather_kernel_buffer_threshold = o.gather_kernel_buffer_threshold
    if o.eager_batching is not None:
        msg.eager_batching = o.eager_batching


def _param_str(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _instance_groups(cfg: mc.ModelConfig, plan: ModelPlan, device: Device) -> None:
    groups = plan.spec.instance_groups
    if not groups:
        cfg.instance_group.add(count=1, kind=INSTANCE_KIND[plan.instance_kind_default])
        return
    for g in groups:
        kind = g.kind or plan.instance_kind_default  # the plan resolves an unset kind; this keeps bare plans working
        moved = device == "cpu" and kind == "gpu"  # a GPU group of a --device cpu build: its gpus do not apply
        kind = "cpu" if moved else kind
        ig = cfg.instance_group.add(count=g.count, kind=INSTANCE_KIND[kind])
        if g.name:
            ig.name = g.name
        if g.gpus and not moved:  # kept on any other kind, so Triton's rule refuses them there (lint.rules)
            ig.gpus.extend(g.gpus)
        if g.passive:
            ig.passive = True
        if g.host_policy:
            ig.host_policy = g.host_policy
        if g.rate_limiter is not None:
            ig.rate_limiter.priority = g.rate_limiter.priority
            for r in g.rate_limiter.resources:
                ig.rate_limiter.resources.add(name=r.name, count=r.count, **{"global": r.global_})


def _sequence(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    sb = plan.spec.sequence_batching
    assert sb is not None
    msg = cfg.sequence_batching
    if sb.max_sequence_idle_us is not None:
        msg.max_sequence_idle_microseconds = sb.max_sequence_idle_us
    if sb.strategy == "direct":
        msg.direct.max_queue_delay_microseconds = sb.max_queue_delay_us
        if sb.minimum_slot_utilization is not None:
            msg.direct.minimum_slot_utilization = sb.minimum_slot_utilization
    else:
        msg.oldest.max_queue_delay_microseconds = sb.max_queue_delay_us
        msg.oldest.max_candidate_sequences = sb.max_candidate_sequences or 1
        msg.oldest.preferred_batch_size.extend(sb.preferred_batch_sizes)
        msg.oldest.preserve_ordering = sb.preserve_ordering
    for c in sb.control_inputs:
        ctl = msg.control_input.add(name=c.name).control.add(kind=SEQUENCE_CONTROL[c.kind])
        if c.kind == "correlation_id":
            ctl.data_type = dtype_enum(c.dtype)
        elif c.dtype == "FP32":
            ctl.fp32_false_true.extend([0.0, 1.0])
        elif c.dtype == "BOOL":
            ctl.bool_false_true.extend([False, True])
        else:
            ctl.int32_false_true.extend([0, 1])
    for s in sb.states:
        st = msg.state.add(input_name=s.input_name, output_name=s.output_name, data_type=dtype_enum(s.dtype))
        st.dims.extend(s.dims)
    if sb.iterative:
        msg.iterative_sequence = True


def _warmup(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    w = plan.spec.warmup
    assert w is not None
    for b in w.batch_sizes:
        entry = cfg.model_warmup.add(name=f"warmup_bs{b}", batch_size=b, count=w.count)
        for t in plan.inputs:
            if t.optional and t.name not in w.shapes:
                continue  # random data in an optional input (a router's weights) is not what clients send
            dims = w.shapes.get(t.name) or [d if d >= 0 else 1 for d in t.dims]
            inp = entry.inputs[t.name]
            inp.data_type = dtype_enum(t.dtype)
            inp.dims.extend(dims)
            if w.data == "zero":
                inp.zero_data = True
            else:
                inp.random_data = True


def build_config(plan: ModelPlan, device: Device) -> mc.ModelConfig:
    """The complete config for one model on `device`."""
    m = plan.spec
    cfg = mc.ModelConfig(name=plan.name, max_batch_size=plan.max_batch_size)
    if plan.serving.platform:
        cfg.platform = plan.serving.platform
    if plan.serving.backend:
        cfg.backend = plan.serving.backend
    if m.version_policy is not None:
        _version_policy(cfg.version_policy, m.version_policy)
    for t in plan.inputs:
        _tensor(cfg.input.add(), t)
    for t in plan.outputs:
        _tensor(cfg.output.add(), t)
    _batch_tensors(cfg, plan)
    if plan.format == "ensemble":
        _ensemble_steps(cfg, plan)
    else:
        _scheduling(cfg, plan, device)
    _model_features(cfg, plan)
    _parameters(cfg, plan)
    if m.raw_config:  # the spec's escape hatch (checked by the plan): merged last, repeated fields append
        cfg.MergeFrom(parse_config(m.raw_config))
    return cfg


def _batch_tensors(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    """batch_input / batch_output: tensors Triton adds to (or takes from) each batch."""
    for bi in plan.spec.batch_inputs:
        msg = cfg.batch_input.add(kind=mc.BatchInput.Kind.Value(bi.kind.upper()), data_type=dtype_enum(bi.dtype))
        msg.target_name.extend(bi.target_names)
        msg.source_input.extend(bi.source_inputs)
    for bo in plan.spec.batch_outputs:
        msg = cfg.batch_output.add(kind=mc.BatchOutput.Kind.Value(bo.kind.upper()))
        msg.target_name.extend(bo.target_names)
        msg.source_input.extend(bo.source_inputs)


def _ensemble_steps(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    """An ensemble's steps, with sorted maps so the config text does not depend on the spec's key order."""
    for st in plan.spec.steps or []:
        step = cfg.ensemble_scheduling.step.add(model_name=st.model, model_version=st.version)
        for k, v in sorted(st.inputs.items()):
            step.input_map[k] = v
        for k, v in sorted(st.outputs.items()):
            step.output_map[k] = v


def _scheduling(cfg: mc.ModelConfig, plan: ModelPlan, device: Device) -> None:
    """What only a model that runs itself has (an ensemble has none): instances, optimization, batchers, warm-up."""
    m = plan.spec
    _instance_groups(cfg, plan, device)
    if m.optimization is not None and not plan.serving.runner:
        # the device decides a native model's instances, so its GPU-only settings too; a python model's are its own
        _optimization(cfg.optimization, m.optimization, "gpu" if plan.format == "python" else device)
    if plan.dynamic_batching:
        _dynamic_batching(cfg, plan)
    if m.sequence_batching is not None:
        _sequence(cfg, plan)
    if m.warmup is not None:
        _warmup(cfg, plan)


def _dynamic_batching(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    """The dynamic batcher: on with Triton's defaults, or with the spec's sizes, delay, priorities and queues."""
    db = plan.spec.dynamic_batching
    cfg.dynamic_batching.SetInParent()
    if db is not None:
        cfg.dynamic_batching.preferred_batch_size.extend(db.preferred_batch_sizes)
        cfg.dynamic_batching.max_queue_delay_microseconds = db.max_queue_delay_us
        cfg.dynamic_batching.preserve_ordering = db.preserve_ordering
        cfg.dynamic_batching.priority_levels = db.priority_levels
        cfg.dynamic_batching.default_priority_level = db.default_priority_level
        if db.queue_policy is not None:
            _queue_policy(cfg.dynamic_batching.default_queue_policy, db.queue_policy)
        for level, q in sorted(db.priority_queue_policy.items()):
            _queue_policy(cfg.dynamic_batching.priority_queue_policy[level], q)


def _model_features(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    """Server-side features any model may have: decoupled responses, response cache, repository agents, metric tags."""
    m = plan.spec
    if m.model_transaction_policy is not None and m.model_transaction_policy.decoupled:
        cfg.model_transaction_policy.decoupled = True
    if m.response_cache:
        cfg.response_cache.enable = True
    for agent in m.model_repository_agents or []:
        a = cfg.model_repository_agents.agents.add(name=agent.name)
        for k, v in sorted(agent.parameters.items()):
            a.parameters[k] = v
    for k, v in sorted(m.metric_tags.items()):
        cfg.metric_tags[k] = v


def _parameters(cfg: mc.ModelConfig, plan: ModelPlan) -> None:
    """The spec's parameters plus what repoforge's runners read (plugin config, runner, model file, threads).
    A natively served model gets the spec's `intra_op_threads` under its backend's own name (intra_op_thread_count,
    INTRA_OP_THREAD_COUNT), so the NGC image's backend and repoforge's Python-based twin read the same setting;
    `auto` (the default) writes nothing there: the backend decides."""
    params = {k: _param_str(v) for k, v in (plan.spec.parameters or {}).items()}
    if plan.spec.plugin is not None:  # the typed plugin config reaches its runner as JSON (runtime.plugins)
        params[PLUGIN_PARAMETER] = plan.spec.plugin.model_dump_json()
    if plan.serving.runner:
        params.setdefault(RUNNER_PARAMETER, plan.serving.runner)
        model_file = {"onnxruntime": "model.onnx", "torchscript": "model.pt"}.get(plan.serving.runner)
        if model_file:  # plugin runners (features, result_cache, router) have no model file
            params.setdefault(MODEL_FILE_PARAMETER, model_file)
            params.setdefault(INTRA_OP_THREADS, DEFAULT_INTRA_OP_THREADS)
    elif plan.serving.backend in ("onnxruntime", "pytorch") and INTRA_OP_THREADS in params:
        native_threads(params, plan.serving.backend)
    for k, v in sorted(params.items()):
        cfg.parameters[k].string_value = v


def native_threads(params: dict[str, str], backend: str) -> None:
    """Move repoforge's `intra_op_threads` (auto or a count, 0 = the runtime's default) to `backend`'s own
    parameter; one the spec sets itself wins. Neither ORT nor PyTorch has `auto`; their default is theirs."""
    value = params.pop(INTRA_OP_THREADS).strip().lower()
    if value == "auto" or (backend == "pytorch" and value == "0"):  # the PyTorch backend applies counts > 0 only
        return
    params.setdefault(THREAD_PARAMETERS[backend], value)


def to_text(cfg: mc.ModelConfig) -> str:
    """Deterministic pbtxt (field order follows the schema), as Triton reads it."""
    return text_format.MessageToString(cfg)


def parse_config(text: str) -> mc.ModelConfig:
    """Parse a config.pbtxt; raises google.protobuf.text_format.ParseError with line:column."""
    return text_format.Parse(text, mc.ModelConfig())
