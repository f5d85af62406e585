"""Triton config → spec: the reverse of `repoforge.triton.config.build_config`, field by field.

`ConfigMapper` turns one `ModelConfig` into spec fields and clears each config field it expressed from `rest`;
what is left over is raw_config. `repoforge.importer` adds the model folder (format, versions, files) on top.
`normalize_config` and `config_differences` say whether a rebuilt config equals the original.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import MODEL_FILE_PARAMETER, PLUGIN_PARAMETER, RUNNER_PARAMETER, Device
from repoforge.lint.rules import Layout, autocomplete
from repoforge.spec.plugins import parse_plugin
from repoforge.triton.config import DEFAULT_INTRA_OP_THREADS
from repoforge.triton.names import (
    INSTANCE_KIND_NAME,
    INTRA_OP_THREADS,
    OPTIMIZATION_PRIORITY_NAME,
    SEQUENCE_CONTROL_NAME,
    THREAD_PARAMETERS,
)

COPY_DIR = "models"  # where copy_models puts the model files, next to the spec

# repoforge's CPU runners: runner → (spec format, model file in the version folder)

# spec field → the config fields it builds (used when a spec field is moved back into raw_config)
SPEC_TO_CONFIG = {
    "version_policy": "version_policy",
    "inputs": "input",
    "outputs": "output",
    "dynamic_batching": "dynamic_batching",
    "sequence_batching": "sequence_batching",
    "instance_groups": "instance_group",
    "warmup": "model_warmup",
    "optimization": "optimization",
    "batch_inputs": "batch_input",
    "batch_outputs": "batch_output",
    "model_repository_agents": "model_repository_agents",
    "model_transaction_policy": "model_transaction_policy",
    "response_cache": "response_cache",
    "metric_tags": "metric_tags",
    "parameters": "parameters",
}
# the order keys are written in
SPEC_ORDER = (
    "name",
    "format",
    "backend",
    "path",
    "versions",
    "version_policy",
    "max_batch_size",
    "inputs",
    "outputs",
    "plugin",
    "steps",
    "dynamic_batching",
    "sequence_batching",
    "instance_groups",
    "warmup",
    "optimization",
    "batch_inputs",
    "batch_outputs",
    "model_transaction_policy",
    "response_cache",
    "model_repository_agents",
    "metric_tags",
    "parameters",
    "raw_config",
)
_KIND = INSTANCE_KIND_NAME
_CONTROL = SEQUENCE_CONTROL_NAME
# PRIORITY_DEFAULT is the unset value: it is not written back
_PRIORITY = {v: k for v, k in OPTIMIZATION_PRIORITY_NAME.items() if k != "default"}
_REPEATED = FieldDescriptor.LABEL_REPEATED
# Config fields a client sees (the tensors it sends and gets, their shapes and layout, batching, streaming): a
# difference there breaks clients, so import reports it apart from the others and `repoforge import` exits 1.
CLIENT_FIELDS = ("input", "output", "max_batch_size", "model_transaction_policy")


def normalize_config(
    cfg: mc.ModelConfig, device: Device, *, folder: str | None = None, model_dir: Path | None = None
) -> mc.ModelConfig:
    """A copy of `cfg` with everything that is purely representational made canonical, so that two configs
    Triton treats the same compare equal:

    - name, platform, backend and default_model_filename are auto-completed as Triton does (a missing name is
      the folder's; `backend: onnxruntime` ≡ `platform: onnxruntime_onnx`; model.py for python, ...);
    - no version_policy ≡ `latest { num_versions: 1 }`;
    - no instance_group ≡ one group of kind AUTO; KIND_AUTO is resolved for `device` (CPU on cpu, GPU on gpu);
      count 0 ≡ Triton's default count (2 for onnxruntime/tensorflow on CPU, else 1); an empty group name ≡
      Triton's `<model>_<index>`; an empty rate_limiter ≡ none;
    - sequence_batching without a strategy ≡ `direct { }`;
    - warmup sample names are dropped (they only label log lines) and count 0 ≡ count 1;
    - settings equal to their off state are dropped: `response_cache { enable: false }`,
      `model_transaction_policy { decoupled: false }`, an empty `model_repository_agents`, an empty
      `optimization` (and inside it an empty execution_accelerators, a `graph` of level 0, a `cuda` with every
      switch off and no graph_spec).

    Everything else (order of inputs, outputs, groups, steps; presence of dynamic_batching; every value) counts.
    """
    n = mc.ModelConfig()
    n.CopyFrom(cfg)
    folder = folder or cfg.name or (model_dir.name if model_dir else "model")
    autocomplete(n, folder, model_dir, Layout.read(model_dir))
    if not n.HasField("version_policy"):
        n.version_policy.latest.num_versions = 1
    if n.platform != "ensemble":
        if not n.instance_group:
            n.instance_group.add(kind=mc.ModelInstanceGroup.KIND_AUTO)
        for i, g in enumerate(n.instance_group):
            if g.kind == mc.ModelInstanceGroup.KIND_AUTO:
                g.kind = mc.ModelInstanceGroup.KIND_CPU if device == "cpu" else mc.ModelInstanceGroup.KIND_GPU
            if g.count < 1:
                two = g.kind == mc.ModelInstanceGroup.KIND_CPU and n.backend in ("onnxruntime", "tensorflow")
                g.count = 2 if two else 1
            if not g.name:
                g.name = f"{n.name}_{i}"
            if g.HasField("rate_limiter") and g.rate_limiter == mc.ModelRateLimiter():
                g.ClearField("rate_limiter")
    if n.HasField("sequence_batching") and n.sequence_batching.WhichOneof("strategy_choice") is None:
        n.sequence_batching.direct.SetInParent()
    for w in n.model_warmup:
        w.name = ""
        w.count = max(w.count, 1)
    if not n.response_cache.enable:
        n.ClearField("response_cache")
    if not n.model_transaction_policy.decoupled:
        n.ClearField("model_transaction_policy")
    if not n.model_repository_agents.agents:
        n.ClearField("model_repository_agents")
    o = n.optimization
    if (
        not o.execution_accelerators.gpu_execution_accelerator
        and not o.execution_accelerators.cpu_execution_accelerator
    ):
        o.ClearField("execution_accelerators")
    if o.graph.level == 0:
        o.ClearField("graph")
    if not (o.cuda.graphs or o.cuda.busy_wait_events or o.cuda.output_copy_stream or o.cuda.graph_spec):
        o.ClearField("cuda")
    if not o.ListFields():
        n.ClearField("optimization")
    return n


def config_differences(a: Message, b: Message, path: str = "") -> list[str]:
    """Readable field-by-field differences `path: a → b` between two messages of one type."""
    out: list[str] = []
    for fd in a.DESCRIPTOR.fields:
        name = fd.name
        p = f"{path}.{name}" if path else name
        va, vb = getattr(a, name), getattr(b, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for k in sorted(set(va) | set(vb), key=str):
                x, y = va.get(k), vb.get(k)  # .get never inserts
                if x != y:
                    out.append(f"{p}[{k!r}]: {_short(x)} → {_short(y)}")
        elif fd.label == _REPEATED:
            la, lb = list(va), list(vb)
            if la == lb:
                continue
            if fd.message_type is not None and len(la) == len(lb):
                for i, (x, y) in enumerate(zip(la, lb, strict=True)):
                    out += config_differences(x, y, f"{p}[{i}]")
            elif fd.enum_type is not None:
                out.append(
                    f"{p}: [{', '.join(_scalar(fd, x) for x in la)}] → [{', '.join(_scalar(fd, x) for x in lb)}]"
                )
            else:
                out.append(f"{p}: {_short(la)} → {_short(lb)}")
        elif fd.message_type is not None:
            ha, hb = a.HasField(name), b.HasField(name)
            if ha and hb:
                out += config_differences(va, vb, p)
            elif ha or hb:
                out.append(f"{p}: {_short(va) if ha else 'absent'} → {_short(vb) if hb else 'absent'}")
        elif va != vb:
            out.append(f"{p}: {_scalar(fd, va)} → {_scalar(fd, vb)}")
    return out


def _scalar(fd: Any, v: Any) -> str:
    """A field's value as the config text writes it: an enum by its name (TYPE_FP32, not 11)."""
    if fd.enum_type is not None:
        value = fd.enum_type.values_by_number.get(v)
        return value.name if value is not None else repr(v)
    return repr(v)


def _short(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, list):
        text = "[" + ", ".join(_short(x) for x in v) + "]"
    elif isinstance(v, Message):
        text = "{" + text_format.MessageToString(v, as_one_line=True) + "}"
    else:
        text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------------------------------------------------
# Mapping one model
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ref:
    """A model file or folder the spec points at: where it is, and where copy_models puts it (spec-relative)."""

    src: Path
    copy_as: str


class _Flow(dict[str, Any]):
    """A mapping written in YAML flow style ({a: 1, b: 2}), for short records such as tensors."""


def _dtype(value: int) -> str | None:
    if value == mc.TYPE_INVALID:
        return None
    name = mc.DataType.Name(value).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _f32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (0.30000001192092896 → 0.3)."""
    want = struct.pack("f", x)
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack("f", y) == want:
            return y
    return x


class ConfigMapper:
    """One model's config mapped to spec fields (`spec`), with the fields left over in `rest`."""

    def __init__(self, name: str, model_dir: Path, cfg: mc.ModelConfig, device: Device) -> None:
        self.name = name
        self.dir = model_dir
        self.cfg = cfg
        self.device = device
        self.rest = mc.ModelConfig()
        self.rest.CopyFrom(cfg)
        self.spec: dict[str, Any] = {"name": name}
        self.notes: list[str] = []
        self.skip: str | None = None
        self.format = ""
        self.runner: str | None = None
        self.plugin = False
        self.backend = ""

    def note(self, message: str) -> None:
        self.notes.append(f"{self.name}: {message}")

    def take(self, *names: str, msg: Message | None = None) -> None:
        for n in names:
            (msg or self.rest).ClearField(n)

    # -- the whole model -------------------------------------------------------------------------------------

    def _version_policy(self) -> None:
        vp = self.cfg.version_policy
        which = vp.WhichOneof("policy_choice")
        if which == "all":
            self.spec["version_policy"] = "all"
        elif which == "specific":
            self.spec["version_policy"] = _Flow(specific=list(vp.specific.versions))
        elif which == "latest" and vp.latest.num_versions >= 1:
            n = vp.latest.num_versions
            self.spec["version_policy"] = "latest" if n == 1 else _Flow(latest=n)
        else:
            return  # e.g. `latest { num_versions: 0 }`: raw_config
        self.take("version_policy")

    # -- inputs and outputs ----------------------------------------------------------------------------------
    def _tensor(self, t: mc.ModelInput | mc.ModelOutput) -> dict[str, Any] | None:
        is_input = isinstance(t, mc.ModelInput)
        dtype = _dtype(t.data_type)
        if not t.name or dtype is None or t.is_non_linear_format_io or any(d < -1 for d in t.dims):
            return None
        d = _Flow(name=t.name, dtype=dtype, dims=list(t.dims))
        if t.HasField("reshape"):
            d["reshape"] = list(t.reshape.shape)
        if is_input and t.format != mc.ModelInput.FORMAT_NONE:
            d["format"] = mc.ModelInput.Format.Name(t.format).removeprefix("FORMAT_").lower()
        if is_input and t.optional:
            d["optional"] = True
        if t.is_shape_tensor:
            d["is_shape_tensor"] = True
        if is_input and t.allow_ragged_batch:
            d["allow_ragged_batch"] = True
        if not is_input and t.label_filename:
            src = (self.dir / t.label_filename).resolve()
            if not src.is_file():
                return None
            d["label_filename"] = _Ref(src, f"{COPY_DIR}/{self.name}/{src.name}")
        return d

    def _io(self) -> None:
        if self.plugin:  # a plugin's inputs and outputs are derived from its config
            self.take("input", "output")
            return
        for kind, key in (("input", "inputs"), ("output", "outputs")):
            tensors = list(getattr(self.cfg, kind))
            mapped: list[dict[str, Any]] = []
            for t in tensors:  # the longest prefix the spec can express; the rest is appended by raw_config
                d = self._tensor(t)
                if d is None or any(m["name"] == t.name for m in mapped):
                    break
                mapped.append(d)
            del getattr(self.rest, kind)[: len(mapped)]
            if mapped or self.format not in ("onnx", "ensemble"):
                self.spec[key] = mapped  # onnx and ensembles without any: read from the file / derived from the steps

    # -- scheduling ------------------------------------------------------------------------------------------
    def _batching(self, mbs: int) -> None:
        cfg = self.cfg
        seq = cfg.HasField("sequence_batching")
        if cfg.HasField("dynamic_batching"):
            if mbs > 0 and not seq:
                self.spec["dynamic_batching"] = self._dynamic(cfg.dynamic_batching)
                self.take("dynamic_batching")
            # else: Triton keeps it (and ignores or refuses it); the spec would reject it: raw_config
        elif mbs > 0 and not seq:
            self.spec["dynamic_batching"] = False  # repoforge turns it on by default
        if seq:
            self._sequence()

    @staticmethod
    def _queue(q: mc.ModelQueuePolicy) -> dict[str, Any]:
        d = _Flow()
        if q.timeout_action == mc.ModelQueuePolicy.DELAY:
            d["timeout_action"] = "delay"
        if q.default_timeout_microseconds:
            d["timeout_us"] = q.default_timeout_microseconds
        if q.allow_timeout_override:
            d["allow_timeout_override"] = True
        if q.max_queue_size:
            d["max_queue_size"] = q.max_queue_size
        return d

    def _dynamic(self, db: mc.ModelDynamicBatching) -> dict[str, Any] | bool:
        d: dict[str, Any] = {}
        if db.preferred_batch_size:
            d["preferred_batch_sizes"] = list(db.preferred_batch_size)
        if db.max_queue_delay_microseconds:
            d["max_queue_delay_us"] = db.max_queue_delay_microseconds
        if db.preserve_ordering:
            d["preserve_ordering"] = True
        if db.priority_levels:
            d["priority_levels"] = db.priority_levels
        if db.default_priority_level:
            d["default_priority_level"] = db.default_priority_level
        if db.HasField("default_queue_policy"):
            d["queue_policy"] = self._queue(db.default_queue_policy)
        if db.priority_queue_policy:
            d["priority_queue_policy"] = {
                k: self._queue(db.priority_queue_policy[k]) for k in sorted(db.priority_queue_policy)
            }
        return d or True

    def _sequence(self) -> None:
        sb, rest = self.cfg.sequence_batching, self.rest.sequence_batching
        d: dict[str, Any] = {}
        if sb.HasField("oldest"):
            o = sb.oldest
            d["strategy"] = "oldest"
            if o.max_candidate_sequences:
                d["max_candidate_sequences"] = o.max_candidate_sequences
            if o.preferred_batch_size:
                d["preferred_batch_sizes"] = list(o.preferred_batch_size)
            if o.max_queue_delay_microseconds:
                d["max_queue_delay_us"] = o.max_queue_delay_microseconds
            if o.preserve_ordering:
                d["preserve_ordering"] = True
            if o.max_candidate_sequences:  # 0 would become the spec's default 1: keep it raw
                self.take("oldest", msg=rest)
        else:
            d["strategy"] = "direct"
            if sb.direct.max_queue_delay_microseconds:
                d["max_queue_delay_us"] = sb.direct.max_queue_delay_microseconds
            if sb.direct.minimum_slot_utilization:
                d["minimum_slot_utilization"] = _f32(sb.direct.minimum_slot_utilization)
            self.take("direct", msg=rest)
        if sb.max_sequence_idle_microseconds:
            d["max_sequence_idle_us"] = sb.max_sequence_idle_microseconds
        self.take("max_sequence_idle_microseconds", msg=rest)
        controls = [self._control(c) for c in sb.control_input]
        if (
            controls
            and all(c is not None for c in controls)
            and len({c["name"] for c in controls if c}) == len(controls)
        ):
            d["control_inputs"] = controls
            self.take("control_input", msg=rest)
        states = [self._state(s) for s in sb.state]
        if states and all(s is not None for s in states):
            d["states"] = states
            self.take("state", msg=rest)
        if sb.iterative_sequence:
            d["iterative"] = True
        self.take("iterative_sequence", msg=rest)
        self.spec["sequence_batching"] = d
        if not rest.ListFields():
            self.take("sequence_batching")

    @staticmethod
    def _control(c: mc.ModelSequenceBatching.ControlInput) -> dict[str, Any] | None:
        if len(c.control) != 1 or not c.name:
            return None
        ctl = c.control[0]
        kind = _CONTROL.get(ctl.kind)
        flags = (list(ctl.int32_false_true), list(ctl.fp32_false_true), list(ctl.bool_false_true))
        if kind == "correlation_id":
            dtype = _dtype(ctl.data_type)
            return _Flow(name=c.name, kind=kind, dtype=dtype) if dtype and flags == ([], [], []) else None
        if kind is None or ctl.data_type != mc.TYPE_INVALID:
            return None
        dtype = {((0, 1), (), ()): "INT32", ((), (0.0, 1.0), ()): "FP32", ((), (), (False, True)): "BOOL"}.get(
            (tuple(flags[0]), tuple(flags[1]), tuple(flags[2]))
        )
        if dtype is None:
            return None
        d = _Flow(name=c.name, kind=kind)
        if dtype != "INT32":
            d["dtype"] = dtype
        return d

    @staticmethod
    def _state(s: mc.ModelSequenceBatching.State) -> dict[str, Any] | None:
        dtype = _dtype(s.data_type)
        if dtype is None or s.initial_state or s.use_same_buffer_for_input_output or s.use_growable_memory:
            return None
        return _Flow(input_name=s.input_name, output_name=s.output_name, dtype=dtype, dims=list(s.dims))

    def _instance_groups(self) -> None:
        groups = []
        for g in self.cfg.instance_group:
            d: dict[str, Any] = _Flow()
            if g.name:
                d["name"] = g.name
            d["kind"] = _KIND[g.kind]
            d["count"] = g.count if g.count >= 1 else self._default_count(g.kind)
            if g.gpus:
                d["gpus"] = list(g.gpus)
            if g.HasField("rate_limiter"):
                d["rate_limiter"] = {
                    "priority": g.rate_limiter.priority,
                    "resources": [
                        _Flow(name=r.name, count=r.count, **({"global": True} if getattr(r, "global") else {}))
                        for r in g.rate_limiter.resources
                    ],
                }
            if "rate_limiter" in d:
                d = dict(d)  # too long for one line
            if g.passive:
                d["passive"] = True
            if g.host_policy:
                d["host_policy"] = g.host_policy
            if g.secondary_devices or g.profile:
                self.note(
                    "instance_group "
                    + (f"'{g.name}' " if g.name else "")
                    + "sets "
                    + " and ".join(f for f in ("secondary_devices", "profile") if getattr(g, f))
                    + ", which the spec cannot express and raw_config cannot add to a group (repeated fields append)"
                )
            groups.append(d)
        if not groups:  # Triton adds one group of kind AUTO with its default count
            groups = [_Flow(kind="auto", count=self._default_count(mc.ModelInstanceGroup.KIND_AUTO))]
        self.spec["instance_groups"] = groups
        self.take("instance_group")

    def _default_count(self, kind: int) -> int:
        resolved = (
            kind
            if kind != mc.ModelInstanceGroup.KIND_AUTO
            else (mc.ModelInstanceGroup.KIND_CPU if self.device == "cpu" else mc.ModelInstanceGroup.KIND_GPU)
        )
        native_two = self.backend == "onnxruntime" and not self.runner
        return 2 if resolved == mc.ModelInstanceGroup.KIND_CPU and native_two else 1

    def _warmup(self, mbs: int) -> None:
        samples = list(self.cfg.model_warmup)
        inputs = {t.name: t for t in self.cfg.input}
        kinds: set[str] = set()
        shapes: dict[str, list[int]] = {}
        counts = {max(w.count, 1) for w in samples}
        ok = len(counts) == 1
        for w in samples:
            ok = ok and (w.batch_size >= 1 if mbs > 0 else w.batch_size == 1) and set(w.inputs) == set(inputs)
            for name, inp in w.inputs.items() if ok else []:
                kind = inp.WhichOneof("input_data_type")
                dims = list(inp.dims)
                t = inputs[name]
                ok = ok and kind in ("zero_data", "random_data") and inp.data_type == t.data_type
                ok = (
                    ok
                    and all(d >= 0 for d in dims)
                    and len(dims) == len(t.dims)
                    and all(x == y or y == -1 for x, y in zip(dims, t.dims, strict=True))
                )
                ok = ok and shapes.setdefault(name, dims) == dims
                kinds.add(str(kind))
        if not ok or len(kinds) != 1:
            return  # mixed data kinds, files, per-sample shapes or counts: raw_config keeps the samples verbatim
        d: dict[str, Any] = {"batch_sizes": [w.batch_size for w in samples]}
        if kinds == {"zero_data"}:
            d["data"] = "zero"
        if counts != {1}:
            d["count"] = counts.pop()
        fixed = {n: s for n, s in shapes.items() if s != [x if x >= 0 else 1 for x in inputs[n].dims]}
        if fixed:
            d["shapes"] = _Flow(fixed)
        self.spec["warmup"] = d
        self.take("model_warmup")

    def _optimization(self) -> None:
        o, rest = self.cfg.optimization, self.rest.optimization
        d: dict[str, Any] = {}
        if o.priority in _PRIORITY:
            d["priority"] = _PRIORITY[o.priority]
        self.take("priority", msg=rest)
        if o.HasField("graph"):
            d["graph_level"] = o.graph.level
            self.take("graph", msg=rest)
        if o.HasField("cuda"):
            c = o.cuda
            for key, on in (
                ("cuda_graphs", c.graphs),
                ("cuda_busy_wait_events", c.busy_wait_events),
                ("cuda_output_copy_stream", c.output_copy_stream),
            ):
                if on:
                    d[key] = True
            if not (c.graphs or c.busy_wait_events or c.output_copy_stream or c.graph_spec):
                d["cuda_graphs"] = False  # keeps the (empty) cuda block
            self.take("graphs", "busy_wait_events", "output_copy_stream", msg=rest.cuda)
            if not rest.cuda.graph_spec:
                self.take("cuda", msg=rest)
        if o.HasField("execution_accelerators"):
            ea = o.execution_accelerators
            acc: dict[str, Any] = {}
            for side, items in (("gpu", ea.gpu_execution_accelerator), ("cpu", ea.cpu_execution_accelerator)):
                if items:
                    acc[side] = [
                        _Flow(
                            name=a.name, **({"parameters": dict(sorted(a.parameters.items()))} if a.parameters else {})
                        )
                        for a in items
                    ]
            d["execution_accelerators"] = acc
            self.take("execution_accelerators", msg=rest)
        pinned = {}
        for key, f in (("input", "input_pinned_memory"), ("output", "output_pinned_memory")):
            if o.HasField(f):
                pinned[key] = getattr(o, f).enable
                self.take(f, msg=rest)
        if pinned:
            d["pinned_memory"] = _Flow(pinned)
        if o.gather_kernel_buffer_threshold:
            d["gather_kernel_buffer_threshold"] = o.gather_kernel_buffer_threshold
        if o.eager_batching:
            d["eager_batching"] = True
        self.take("gather_kernel_buffer_threshold", "eager_batching", msg=rest)
        if d:
            self.spec["optimization"] = d
        if not rest.ListFields():
            self.take("optimization")

    # -- the rest --------------------------------------------------------------------------------------------
    def _steps(self) -> None:
        steps = []
        for st in self.cfg.ensemble_scheduling.step:
            if st.model_namespace:
                self.note(f"step '{st.model_name}' sets model_namespace, which the spec cannot express")
            d = _Flow(model=st.model_name)
            if st.model_version != -1:
                d["version"] = st.model_version
            d["inputs"] = _Flow(sorted(st.input_map.items()))
            d["outputs"] = _Flow(sorted(st.output_map.items()))
            steps.append(d)
        self.spec["steps"] = steps
        self.take("ensemble_scheduling")

    def _batch_io(self) -> None:
        bis: list[_Flow] = []  # all or none: one the spec cannot express keeps them all in raw_config
        for b in self.cfg.batch_input:
            dtype = _dtype(b.data_type)
            if dtype is None or not b.target_name:
                bis = []
                break
            bis.append(
                _Flow(
                    kind=mc.BatchInput.Kind.Name(b.kind).lower(),
                    target_names=list(b.target_name),
                    dtype=dtype,
                    source_inputs=list(b.source_input),
                )
            )
        if bis:
            self.spec["batch_inputs"] = bis
            self.take("batch_input")
        bos: list[_Flow] = []
        for b in self.cfg.batch_output:
            if not b.target_name or not b.source_input:
                bos = []
                break
            bos.append(_Flow(target_names=list(b.target_name), source_inputs=list(b.source_input)))
        if bos:
            self.spec["batch_outputs"] = bos
            self.take("batch_output")

    def _misc(self) -> None:
        cfg = self.cfg
        if cfg.model_transaction_policy.decoupled:
            self.spec["model_transaction_policy"] = {"decoupled": True}
        self.take("model_transaction_policy")
        if cfg.response_cache.enable:
            self.spec["response_cache"] = True
        self.take("response_cache")
        agents = [
            {"name": a.name, **({"parameters": dict(sorted(a.parameters.items()))} if a.parameters else {})}
            for a in cfg.model_repository_agents.agents
        ]
        if agents:
            self.spec["model_repository_agents"] = agents
        self.take("model_repository_agents")
        if cfg.metric_tags:
            self.spec["metric_tags"] = dict(sorted(cfg.metric_tags.items()))
        self.take("metric_tags")
        params = {k: v.string_value for k, v in sorted(cfg.parameters.items())}
        if self.runner:  # the build adds them again (intra_op_threads only when not set)
            params.pop(RUNNER_PARAMETER, None)
            params.pop(MODEL_FILE_PARAMETER, None)
            if params.get("intra_op_threads") == DEFAULT_INTRA_OP_THREADS:
                params.pop("intra_op_threads")
        elif self.backend in ("onnxruntime", "pytorch"):
            _spec_threads(params, self.backend)
        if self.plugin:
            plugin = parse_plugin(params.pop(PLUGIN_PARAMETER))
            self.spec["plugin"] = plugin.model_dump(mode="json", exclude_defaults=True) | {"kind": plugin.kind}
            params.pop(RUNNER_PARAMETER, None)
        if params:
            self.spec["parameters"] = params
        self.take("parameters")

    # -- moving a spec field back into raw_config ------------------------------------------------------------


def _spec_threads(params: dict[str, str], backend: str) -> None:
    """A native backend's intra-op thread parameter in the spec's words (`intra_op_threads`), where the build
    writes it back byte for byte (triton.config.native_threads): a whole number, and not 0 for PyTorch."""
    native = THREAD_PARAMETERS[backend]
    value = params.get(native, "")
    if INTRA_OP_THREADS in params or not value.isdigit() or str(int(value)) != value:
        return
    if backend == "pytorch" and value == "0":
        return
    params[INTRA_OP_THREADS] = params.pop(native)
