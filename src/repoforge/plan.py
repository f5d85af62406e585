"""Resolve a loaded spec into one typed build plan.

This is where the whole picture is known: defaults are merged, model files are read (ONNX
signatures), the target device picks how each format is served, and every cross-field and
cross-model rule is checked. Nothing is written here; a plan that exists is a plan Triton accepts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repoforge.contract import Device
from repoforge.graph import find_cycle
from repoforge.plan_base import (
    BuildRules,
    Checker,
    ModelPlan,
    RepositoryPlan,
    ServingChoice,
    check_batching,
    check_common,
    python_filename,
    resolve_file,
    same_dims,
)
from repoforge.plan_serving import apply_serving
from repoforge.plugin_plan import derive_in_order, drift_reference, plugin_model_plan
from repoforge.runtime.threads import parse_setting
from repoforge.spec.deploy import check_deploy, gpu_setting_warnings
from repoforge.spec.gateway import sections
from repoforge.spec.load import LoadedSpec, effective
from repoforge.spec.models import SMOKE_INPUTS, EnsembleStep, ModelSpec, TensorSpec
from repoforge.spec.plugins import RouterPlugin
from repoforge.spec.yamlsource import PathKey
from repoforge.triton.build_rules import TRITON_RULES
from repoforge.triton.names import FORMATS
from repoforge.triton.onnx_io import OnnxReadError, OnnxSignature, read_signature
from repoforge.triton.spec_rules import ensemble_rules, triton_rules

if TYPE_CHECKING:
    pass

# Used when neither the model nor `defaults:` sets max_batch_size and the ONNX file has a dynamic batch axis.
DEFAULT_ONNX_MAX_BATCH_SIZE = 32

# The file name each format gets inside its version folder (Triton's defaults, so no default_model_filename is needed).


def detect_device() -> Device:
    """`gpu` only where an NVIDIA GPU is visible; laptops and CI get the CPU repository."""
    return "gpu" if shutil.which("nvidia-smi") and Path("/dev/nvidia0").exists() else "cpu"


def _check_threads(ck: Checker, i: int, m: ModelSpec) -> None:
    """`parameters.intra_op_threads` is read by the CPU runners and TorchServe handlers at load time;
    a bad value must fail the build, not the model load."""
    value = (m.parameters or {}).get("intra_op_threads")
    if value is None:
        return
    try:
        parse_setting(str(value))
    except ValueError:
        ck.add(
            ("models", i, "parameters", "intra_op_threads"),
            f"intra_op_threads must be 'auto' or a whole number >= 0 (0 = the runtime's own default), not {value!r}",
        )


def _instance_kinds(ck: Checker, i: int, m: ModelSpec, default: Device, warnings: list[str]) -> ModelSpec:
    """Give every instance group without a `kind` the build's kind (`default`), so a `--device gpu` build of
    `instance_groups: [{count: 2}]` runs on the GPU. A group that lists `gpus` is a GPU group. An explicit
    `kind: cpu` (in the model or in `defaults:`) stays as written; in a GPU build that is worth a warning."""
    groups = m.instance_groups or []
    if default == "gpu" and any(g.kind == "cpu" for g in groups):
        where = "from `defaults:` " if ck.loaded.origin(i, "instance_groups")[0] == "defaults" else ""
        stays = ck.rules.cpu_kind_word
        warnings.append(
            f"{m.name}: instance group kind cpu {where}stays {stays} in this --device gpu build; "
            "leave `kind` out to follow --device, or set kind: gpu"
        )
    if all(g.kind is not None for g in groups):
        return m
    resolved = [
        g if g.kind is not None else g.model_copy(update={"kind": "gpu" if g.gpus else default}) for g in groups
    ]
    return m.model_copy(update={"instance_groups": resolved})


#: A script beside a spec that writes its model files (repoforge's examples generate theirs instead of committing them).
MODEL_GENERATOR = "make_models.py"


def _generator_hint(spec: Path) -> str:
    """Where a missing model file is made by a script beside the spec, the command that makes it."""
    script = spec.parent / MODEL_GENERATOR
    return f"; it is generated: run python {script} first" if script.is_file() else ""


def _cpu_only(p: ModelPlan) -> bool:
    """Whether every instance of the model is a CPU one (kinds as the plan resolved them)."""
    kinds = {g.kind or p.instance_kind_default for g in p.spec.instance_groups or []} or {p.instance_kind_default}
    return kinds == {"cpu"}


def _versions(ck: Checker, i: int, m: ModelSpec) -> dict[int, Path | None]:
    """version → source path; `versions: [1, 2]` reuses `path` for each version."""
    if m.format == "ensemble":
        if m.path:
            ck.add(("models", i, "path"), "an ensemble has no model file; remove `path` (its steps name the models)")
        return {v: None for v in (m.versions or {1: None})}
    declared = m.versions or {1: None}
    out: dict[int, Path | None] = {}
    for v, rel in declared.items():
        src_rel = rel or m.path
        where: PathKey = ("models", i, "versions", v) if rel else ("models", i, "path")
        if not src_rel:
            if ck.rules.user_handler and m.handler:  # the user's TorchServe handler needs no model file
                continue
            ck.add(("models", i), f"format {m.format} needs `path:` (the model file, relative to the spec)")
            continue
        src = resolve_file(ck.loaded, src_rel)
        if not src.exists():
            ck.add(where, f"model file '{src_rel}' not found (looked for {src}){_generator_hint(ck.loaded.path)}")
            continue
        if src.is_dir() and m.format != "python":
            ck.add(where, f"'{src_rel}' is a folder; format {m.format} expects a single model file")
            continue
        entry = python_filename(m)
        if src.is_dir() and ck.rules.python_entry_file and not (src / entry).exists():
            ck.add(
                where,
                f"folder '{src_rel}' has no {entry}; a python model folder must contain {entry}"
                + ("" if entry == "model.py" else " (raw_config's default_model_filename)"),
            )
            continue
        out[v] = src
    return out


def _serving(ck: Checker, i: int, m: ModelSpec, device: Device) -> ServingChoice:
    """Plain ONNX, TorchScript and TensorRT models get Triton's native backend on every device, so the stock NGC
    image serves any build as written (repoforge's bundled server has Python-based backends of the same names).
    repoforge's Python runner serves an ONNX/TorchScript model only where the spec asks for it: `backend: python`."""
    if ck.rules.own_serving:  # the target's builder decides how each format is served
        return ServingChoice(platform="ensemble") if m.format == "ensemble" else ServingChoice(backend="torchserve")
    if m.format == "pytorch":
        ck.add(
            ("models", i, "format"),
            "eager pytorch state_dict models are served by TorchServe; use --target torchserve or export TorchScript",
        )
        return ServingChoice()
    if m.format == "ensemble":
        return ServingChoice(platform="ensemble")
    if m.format == "python":
        return ServingChoice(backend=m.backend or "python")
    names = FORMATS[m.format]
    if m.backend == "python":
        if names.runner is None:
            ck.add(
                ("models", i, "backend"),
                f"repoforge has no Python runner for format {m.format}; remove `backend: python` "
                f"(Triton's {names.backend} backend serves it)",
            )
            return ServingChoice()
        return ServingChoice(backend="python", runner=names.runner)
    if m.backend:
        return ServingChoice(backend=m.backend)
    if m.format == "tensorrt":
        if device != "gpu":
            ck.add(
                ("models", i, "format"),
                "a TensorRT plan runs only on an NVIDIA GPU; build with --device gpu (on a GPU host with the NGC "
                "Triton image)",
            )
        return ServingChoice(platform=names.platform)
    return ServingChoice(backend=names.backend)


def _sequence_tensors(m: ModelSpec) -> set[str]:
    """The ONNX inputs Triton's sequence batcher fills (control inputs, implicit state): not the client's inputs."""
    sb = m.sequence_batching
    if sb is None:
        return set()
    return {c.name for c in sb.control_inputs} | {s.input_name for s in sb.states}


def _onnx_io(
    ck: Checker, i: int, m: ModelSpec, sig: OnnxSignature, mbs: int, src_rel: str
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs/outputs from the ONNX file, checked against (and completed by) what the spec declares."""
    result: list[list[TensorSpec]] = []
    for kind, file_tensors, declared in (("inputs", sig.inputs, m.inputs), ("outputs", sig.outputs, m.outputs)):
        by_name = {t.name: t for t in file_tensors}
        file_specs: dict[str, TensorSpec] = {}
        for t in file_tensors:
            dims = list(t.shape)
            if mbs > 0:
                if not dims or dims[0] != -1:
                    ck.add(
                        ("models", i, "max_batch_size"),
                        f"max_batch_size {mbs} needs a dynamic first axis, but {src_rel} gives {kind[:-1]} '{t.name}' shape {list(t.shape)}; "
                        "set max_batch_size: 0 or export the model with a dynamic batch axis",
                    )
                    continue
                dims = dims[1:]
            file_specs[t.name] = TensorSpec(name=t.name, dtype=t.dtype, dims=dims)
        if declared is None:
            # Triton fills a sequence model's control and state inputs; in input[] clients would have to send them
            result.append([t for t in file_specs.values() if kind == "outputs" or t.name not in _sequence_tensors(m)])
            continue
        chosen: list[TensorSpec] = []
        for j, d in enumerate(declared):
            path: PathKey = ("models", i, kind, j)
            if d.name not in by_name:
                ck.add(
                    path + ("name",),
                    f"{src_rel} has no {kind[:-1]} named '{d.name}'; it has {', '.join(sorted(by_name)) or 'none'}",
                )
                continue
            f = file_specs.get(d.name)
            if f is None:
                continue
            if d.dtype != f.dtype:
                ck.add(
                    path + ("dtype",),
                    f"{d.dtype} contradicts {src_rel}, which says {kind[:-1]} '{d.name}' is {f.dtype}",
                )
            target = d.reshape if d.reshape is not None else d.dims
            if d.reshape is None and not same_dims(d.dims, f.dims):
                ck.add(
                    path + ("dims",),
                    f"{d.dims} contradicts {src_rel}, which says {kind[:-1]} '{d.name}' has dims {f.dims}"
                    + (" (batch axis excluded)" if mbs > 0 else ""),
                )
            elif d.reshape is not None and not same_dims(target, f.dims):
                ck.add(
                    path + ("reshape",),
                    f"{target} contradicts {src_rel}, which says {kind[:-1]} '{d.name}' has dims {f.dims}",
                )
            chosen.append(d)
        if kind == "inputs":  # every input the model needs must be in the config; fill in the undeclared ones
            named = {d.name for d in declared} | _sequence_tensors(m)
            chosen += [t for n, t in file_specs.items() if n not in named]
        result.append(chosen)
    return result[0], result[1]


def _max_batch_size(ck: Checker, i: int, m: ModelSpec, sig: OnnxSignature | None) -> int:
    if m.max_batch_size is not None:
        return m.max_batch_size
    if sig is not None:
        return DEFAULT_ONNX_MAX_BATCH_SIZE if sig.batchable() else 0
    return 0


def _check_resolved(
    ck: Checker,
    i: int,
    m: ModelSpec,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    versions: dict[int, Path | None],
) -> dict[str, Path]:
    """Rules that need the resolved inputs/outputs and versions; returns the extra files to ship."""
    vp = m.version_policy
    if vp is not None and vp.specific is not None and versions:
        for j, v in enumerate(vp.specific):
            if v not in versions:
                ck.add(
                    (*ck.loaded.origin(i, "version_policy"), "specific", j),
                    f"version {v} is not built for this model (versions: {sorted(versions)}); Triton would find nothing to load",
                )
    if m.warmup is not None and m.format != "ensemble":
        by_name = {t.name: t for t in inputs}
        for name, dims in m.warmup.shapes.items():
            where = (*ck.loaded.origin(i, "warmup"), "shapes", name)
            if name not in by_name:
                ck.add(
                    where,
                    f"'{name}' is not an input of this model; inputs are {', '.join(sorted(by_name)) or 'none'}",
                    key=True,
                )
            elif not same_dims(dims, by_name[name].dims) or any(d < 0 for d in dims):
                ck.add(where, f"warmup shape {dims} must be concrete sizes matching dims {by_name[name].dims}")
    extra: dict[str, Path] = {}
    for j, t in enumerate(outputs):
        if t.label_filename:
            src = resolve_file(ck.loaded, t.label_filename)
            if not src.is_file():
                ck.add(
                    ("models", i, "outputs", j, "label_filename"),
                    f"labels file '{t.label_filename}' not found (looked for {src})",
                )
            elif extra.get(src.name, src) != src:
                ck.add(
                    ("models", i, "outputs", j, "label_filename"),
                    f"two different labels files are both named '{src.name}'",
                )
            else:
                extra[src.name] = src
    return extra


def _smoke_inputs(ck: Checker, p: ModelPlan) -> dict[str, Path]:
    """The spec's `smoke.inputs` file, checked now (an .npz without pickles, one array per input) so validate
    never finds a broken one; shipped in the model folder under a fixed name validate looks for."""
    if p.spec.smoke is None:
        return {}
    where: PathKey = ("models", p.index, "smoke", "inputs")
    src = resolve_file(ck.loaded, p.spec.smoke.inputs)
    try:
        with np.load(src, allow_pickle=False) as npz:
            names = set(npz.files)
    except FileNotFoundError:
        ck.add(where, f"smoke inputs file '{p.spec.smoke.inputs}' not found (looked for {src})")
        return {}
    except (OSError, ValueError) as exc:  # not an npz, or object arrays (pickles)
        ck.add(
            where,
            f"'{p.spec.smoke.inputs}' is not an .npz of plain arrays (np.savez; BYTES as fixed-width bytes): {exc}",
        )
        return {}
    declared = {t.name for t in p.inputs}
    if declared and names - declared:
        ck.add(
            where,
            f"{', '.join(sorted(names - declared))} in '{p.spec.smoke.inputs}' are not inputs of this model; "
            f"inputs are {', '.join(sorted(declared))}",
        )
    return {SMOKE_INPUTS: src}


def _io_declared(ck: Checker, i: int, m: ModelSpec) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if m.inputs is None or m.outputs is None:
        missing = " and ".join(k for k in ("inputs", "outputs") if getattr(m, k) is None)
        ck.add(("models", i), f"format {m.format} needs {missing} declared (repoforge reads them from ONNX files only)")
    return list(m.inputs or []), list(m.outputs or [])


_Use = tuple[int, TensorSpec, int]  # one end of an ensemble tensor: (step, step model tensor, step model mbs)


def _ensemble(ck: Checker, plans: dict[str, ModelPlan], e: ModelPlan) -> None:
    """Check the step graph and derive the ensemble's own inputs and outputs from it."""
    i, m = e.index, e.spec
    steps = m.steps or []
    if not steps:
        ck.add(("models", i, "steps"), "an ensemble needs at least one step")
        return
    mapped = _map_steps(ck, plans, e, steps)
    if mapped is None:
        return
    produced, consumed = mapped
    _check_edges(ck, i, produced, consumed)
    # Cycles: a step may only run once all its inputs exist.
    deps = {
        s: {produced[et][0] for et, uses in consumed.items() for (c, _, _) in uses if c == s and et in produced}
        for s in range(len(steps))
    }
    cycle = find_cycle(deps)
    if cycle:
        s = cycle[0]
        ck.add(("models", i, "steps", s), f"the steps form a cycle through step {s} ({steps[s].model})")
        return
    derived_in = [
        TensorSpec(name=et, dtype=uses[0][1].dtype, dims=uses[0][1].dims)
        for et, uses in consumed.items()
        if et not in produced
    ]
    derived_out = [
        TensorSpec(name=et, dtype=t.dtype, dims=t.dims) for et, (_, t, _) in produced.items() if et not in consumed
    ]
    _ensemble_batch_size(ck, plans, e, steps)
    for kind, derived in (("inputs", derived_in), ("outputs", derived_out)):
        _ensemble_tensors(ck, e, kind, derived)


def _map_steps(
    ck: Checker, plans: dict[str, ModelPlan], e: ModelPlan, steps: list[EnsembleStep]
) -> tuple[dict[str, _Use], dict[str, list[_Use]]] | None:
    """(producer, consumers) of each ensemble tensor; None when a step's model or maps are wrong (all reported)."""
    produced: dict[str, _Use] = {}  # ensemble tensor → (step, tensor, step model mbs)
    consumed: dict[str, list[_Use]] = {}
    ok = True
    for s_i, st in enumerate(steps):
        spath: PathKey = ("models", e.index, "steps", s_i)
        target = _step_model(ck, plans, e, spath, s_i, st)
        if target is None:
            ok = False
            continue
        ok = _map_step_inputs(ck, spath, s_i, st, target, consumed) and ok
        ok = _map_step_outputs(ck, spath, s_i, st, target, produced) and ok
    return (produced, consumed) if ok else None


def _step_model(
    ck: Checker, plans: dict[str, ModelPlan], e: ModelPlan, spath: PathKey, s_i: int, st: EnsembleStep
) -> ModelPlan | None:
    """The plan of the model step `s_i` calls (its version checked), or None when it cannot be a step."""
    target = plans.get(st.model)
    if st.model == e.name:
        ck.add((*spath, "model"), "an ensemble cannot use itself as a step")
        return None
    if target is None:
        ck.add(
            (*spath, "model"),
            f"step {s_i} names model '{st.model}', which is not in the spec; models are: {', '.join(sorted(plans))}",
        )
        return None
    return target  # its version is checked by Triton's rule on the built ensemble (_ensemble_rules)


def _map_step_inputs(
    ck: Checker, spath: PathKey, s_i: int, st: EnsembleStep, target: ModelPlan, consumed: dict[str, list[_Use]]
) -> bool:
    """Record the step's inputs as consumers; False when it maps an input its model does not have."""
    ok = True
    t_in = {t.name: t for t in target.inputs}
    for mt, et in st.inputs.items():
        if mt not in t_in:
            ck.add(
                (*spath, "inputs", mt),
                f"step {s_i} ({st.model}) has no input '{mt}'; its inputs are {', '.join(sorted(t_in))}",
                key=True,
            )
            ok = False
            continue
        consumed.setdefault(et, []).append((s_i, t_in[mt], target.max_batch_size))
    return ok  # an unmapped required input is Triton's rule on the built ensemble (_ensemble_rules)


def _map_step_outputs(
    ck: Checker, spath: PathKey, s_i: int, st: EnsembleStep, target: ModelPlan, produced: dict[str, _Use]
) -> bool:
    """Record the step's outputs as producers; False when it maps an unknown output or one another step produces."""
    ok = True
    t_out = {t.name: t for t in target.outputs}
    for mt, et in st.outputs.items():
        if mt not in t_out:
            ck.add(
                (*spath, "outputs", mt),
                f"step {s_i} ({st.model}) has no output '{mt}'; its outputs are {', '.join(sorted(t_out))}",
                key=True,
            )
            ok = False
            continue
        if et in produced:
            ck.add(
                (*spath, "outputs", mt),
                f"ensemble tensor '{et}' is already produced by step {produced[et][0]}; each tensor has one producer",
                key=True,
            )
            ok = False
            continue
        produced[et] = (s_i, t_out[mt], target.max_batch_size)
    return ok


def _check_edges(ck: Checker, i: int, produced: dict[str, _Use], consumed: dict[str, list[_Use]]) -> None:
    """Edges: producer and consumers must agree on dtype and dims, and no step reads its own output."""
    for et, uses in consumed.items():
        if et not in produced:
            continue
        p_step, p_t, _ = produced[et]
        for c_step, c_t, _ in uses:
            if c_step == p_step:
                ck.add(("models", i, "steps", c_step), f"step {c_step} consumes its own output '{et}'")
            if p_t.dtype != c_t.dtype:
                ck.add(
                    ("models", i, "steps", c_step, "inputs"),
                    f"tensor '{et}': step {p_step} produces {p_t.dtype} but step {c_step} expects {c_t.dtype}",
                )
            if not same_dims(p_t.dims, c_t.dims):
                ck.add(
                    ("models", i, "steps", c_step, "inputs"),
                    f"tensor '{et}': step {p_step} produces dims {p_t.dims} but step {c_step} expects {c_t.dims}",
                )


def _ensemble_batch_size(ck: Checker, plans: dict[str, ModelPlan], e: ModelPlan, steps: list[EnsembleStep]) -> None:
    """The ensemble batches as far as its smallest step does: derived when unset, else checked against each step."""
    if e.spec.max_batch_size is None:  # a set one is checked against the steps by _ensemble_rules (Triton's rule)
        e.max_batch_size = min(plans[st.model].max_batch_size for st in steps)


def _ensemble_tensors(ck: Checker, e: ModelPlan, kind: str, derived: list[TensorSpec]) -> None:
    """The ensemble's `kind` (inputs or outputs): the derived ones, or the declared ones checked against them."""
    i = e.index
    declared = getattr(e.spec, kind)
    if declared is None:
        setattr(e, kind, derived)
        return
    d_by = {t.name: t for t in derived}
    for j, t in enumerate(declared):
        if t.name not in d_by:
            ck.add(
                ("models", i, kind, j, "name"),
                f"'{t.name}' is not an ensemble {kind[:-1]} of the steps; derived {kind}: {', '.join(sorted(d_by)) or 'none'}",
            )
        elif t.dtype != d_by[t.name].dtype or not same_dims(t.dims, d_by[t.name].dims):
            ck.add(
                ("models", i, kind, j),
                f"declared {t.dtype} {t.dims} but the steps give {d_by[t.name].dtype} {d_by[t.name].dims}",
            )
    missing = set(d_by) - {t.name for t in declared}
    if missing:
        ck.add(
            ("models", i, kind),
            f"the steps also {'need' if kind == 'inputs' else 'produce'} {', '.join(sorted(missing))}; declare them or leave {kind} out",
        )
    setattr(e, kind, list(declared))


def _check_rollout(ck: Checker, plans: dict[str, ModelPlan]) -> None:
    """`rollout:` names a router plugin model and one of its routes (or its canary): the release moves that
    router's traffic, so anything else has nothing to shift (or to roll back)."""
    r = ck.loaded.spec.rollout
    if r is None:
        return
    if not ck.rules.rollout:
        ck.add(
            ("rollout",),
            "rollout needs repoforge's router plugin, which runs on --target triton only; "
            "build with --target triton or remove `rollout:`",
            key=True,
        )
        return
    routers = sorted(n for n, p in plans.items() if isinstance(p.spec.plugin, RouterPlugin))
    if r.router is None:
        ck.add(("rollout",), "rollout.router must name the router plugin model that splits the traffic "
               f"({', '.join(routers) or 'the spec has none'})", key=True)  # fmt: skip
        return
    plan = plans.get(r.router)
    if plan is None or not isinstance(plan.spec.plugin, RouterPlugin):
        what = "is not a model of this spec" if plan is None else "has no `plugin: {kind: router}`"
        ck.add(("rollout", "router"), f"rollout.router {r.router!r} {what}; "
               f"router plugin models: {', '.join(routers) or 'none'}")  # fmt: skip
        return
    targets = [t.model for t in plan.spec.plugin.targets]
    if r.candidate is None:
        ck.add(("rollout",), f"rollout.candidate must name the model being released, one of {r.router}'s "
               f"routes or its canary ({', '.join(targets)})", key=True)  # fmt: skip
    elif r.candidate not in targets:
        ck.add(("rollout", "candidate"), f"rollout.candidate {r.candidate!r} is not a route or the canary of "
               f"router {r.router!r} ({', '.join(targets)}); add it there, e.g. canary: {{model: {r.candidate}, "
               "percent: 0}")  # fmt: skip


def _check_gateway(ck: Checker) -> None:
    """`gateway:` and `async:` configure `repoforge gateway`, which fronts Triton's gRPC only."""
    spec = ck.loaded.spec
    for key, section in (("gateway", spec.gateway), ("async", spec.async_)):
        if section is not None and not ck.rules.gateway:
            ck.add((key,), f"`{key}:` configures `repoforge gateway`, which speaks Triton's gRPC protocol: build with "
                   f"--target triton or remove `{key}:`", key=True)  # fmt: skip


def _check_serving(ck: Checker, plans: dict[str, ModelPlan]) -> None:
    """`serving:` is the gateway's load-on-demand in front of Triton (explicit model control): its
    `always_loaded` names models of this spec."""
    serving = ck.loaded.spec.serving
    if serving is None:
        return
    if not ck.rules.explicit_model_control:
        ck.add(("serving",), "serving (load on demand through `repoforge gateway`) needs Triton's explicit model "
               "control: build with --target triton or remove `serving:`", key=True)  # fmt: skip
        return
    for j, name in enumerate(serving.always_loaded):
        if name not in plans:
            ck.add(("serving", "always_loaded", j), f"always_loaded names {name!r}, which is not a model of this "
                   f"spec; models: {', '.join(sorted(plans)[:20])}{' ...' if len(plans) > 20 else ''}")  # fmt: skip


def _check_requirements(ck: Checker, i: int, m: ModelSpec) -> None:
    """`requirements:` declares what the user's own code imports, which repoforge cannot know. repoforge's own
    code (plugins, runners, its handler) declares its packages itself, and a native backend runs no Python."""
    if not m.requirements:
        return
    if m.plugin is None and (m.format == "python" or (ck.rules.user_handler and bool(m.handler or m.model_file))):
        return
    yours = "a format python model" + (", or a handler or model_file of yours" if ck.rules.user_handler else "")
    ck.add(
        ("models", i, "requirements"),
        f"`requirements:` lists what your own code imports ({yours}); model '{m.name}' runs repoforge's code, "
        "which declares the packages it needs itself (repoforge.lock.json, python_requirements)",
    )


def _model_warnings(m: ModelSpec, serving: ServingChoice, device: Device, rules: BuildRules) -> list[str]:
    """Settings of a model that this build leaves out or that do not apply to its target."""
    out: list[str] = []
    if not rules.optimize and m.optimize is not None:
        out.append(f"{m.name}: `optimize:` applies to --target triton builds; this build ships the model as written")
    if rules.ignored_fields:
        out += [
            f"{m.name}: `{f}` is a TorchServe setting; --target triton ignores it"
            for f in rules.ignored_fields
            if getattr(m, f)
        ]
    if serving.runner and m.optimization is not None:
        out.append(
            f"{m.name}: `optimization` is left out (repoforge's {serving.runner} runner, `backend: python`, "
            "has no use for it)"
        )
    elif (
        device == "cpu"
        and rules.gpu_only_optimization_warning
        and m.format != "python"
        and m.optimization
        and m.optimization.gpu_only()
    ):
        out.append(
            f"{m.name}: GPU-only `optimization` settings ({', '.join(m.optimization.gpu_only())}) are left out "
            "for --device cpu"
        )
    return out


def make_plan(loaded: LoadedSpec, device: Device | None = None, rules: BuildRules = TRITON_RULES) -> RepositoryPlan:
    """Resolve the spec for `device` (auto-detected when None) under a target's `rules` (Triton's unless given).
    Raises SpecError with every problem found."""
    device = device or detect_device()
    ck = Checker(loaded, rules)
    plans: dict[str, ModelPlan] = {}
    warnings: list[str] = []
    for i, raw in enumerate(loaded.spec.models):
        m = effective(loaded, raw)
        # python models (and repoforge's plugins) run on the CPU unless they ask for a GPU
        kind_default: Device = "gpu" if device == "gpu" and m.format != "python" else "cpu"
        m = _instance_kinds(ck, i, m, kind_default, warnings)
        _check_requirements(ck, i, m)
        if m.plugin is not None:  # features / result_cache / semantic_cache / router: repoforge's own Python backends
            plans[m.name] = plugin_model_plan(ck, i, m, device)
            continue
        versions = _versions(ck, i, m)
        serving = _serving(ck, i, m, device)
        sig: OnnxSignature | None = None
        src_rel = m.path or ""
        if m.format == "onnx" and versions:
            first_v = min(versions)
            src = versions[first_v]
            src_rel = (m.versions or {}).get(first_v) or m.path or ""
            try:
                sig = read_signature(src) if src else None
            except OnnxReadError as exc:
                ck.add(("models", i, "path"), str(exc))
        mbs = _max_batch_size(ck, i, m, sig)
        if sig is not None:
            inputs, outputs = _onnx_io(ck, i, m, sig, mbs, src_rel)
            for v, src in versions.items():  # every version must have the same signature as the first
                if src is not None and v != min(versions):
                    try:
                        other = read_signature(src)
                    except OnnxReadError as exc:
                        ck.add(("models", i, "versions", v), str(exc))
                        continue
                    if (other.inputs, other.outputs) != (sig.inputs, sig.outputs):
                        ck.add(
                            ("models", i, "versions", v),
                            f"version {v} has different inputs/outputs than version {min(versions)}; one config serves all versions",
                        )
        elif m.format in ("ensemble", "onnx") or (ck.rules.user_handler and (m.format == "python" or m.handler)):
            # onnx without a signature: its file problem is already reported; a TorchServe handler of the user's owns its I/O
            inputs, outputs = list(m.inputs or []), list(m.outputs or [])
        else:
            inputs, outputs = _io_declared(ck, i, m)
        check_common(ck, i, m)
        _check_threads(ck, i, m)
        dyn = check_batching(ck, i, m, mbs)
        extra = _check_resolved(ck, i, m, inputs, outputs, versions)
        if device == "cpu" and any(g.kind == "gpu" for g in (m.instance_groups or [])):
            warnings.append(
                f"{m.name}: instance group kind gpu becomes " + ck.rules.cpu_kind_word + " for --device cpu"
            )
        warnings += _model_warnings(m, serving, device, ck.rules)
        plans[m.name] = ModelPlan(
            name=m.name,
            index=i,
            format=m.format,
            spec=m,
            max_batch_size=mbs,
            inputs=inputs,
            outputs=outputs,
            versions=versions,
            serving=serving,
            dynamic_batching=dyn,
            instance_kind_default=kind_default,
            extra_files=extra,
        )
    apply_serving(ck, plans)  # tenants' priorities and the rate limiter, before Triton's rules see the configs
    for p in plans.values():
        if p.format != "ensemble" and ck.rules.server_config_rules:
            triton_rules(ck, p, device)
    for path, message in check_deploy(loaded.spec.deploy, rules=rules.deploy, device=device):
        ck.add(("deploy", *path), message)
    running = [p for p in plans.values() if p.format != "ensemble"]
    warnings += gpu_setting_warnings(
        loaded.spec.deploy,
        device=device,
        models=[p.name for p in running],
        cpu_only=[p.name for p in running if _cpu_only(p)],
    )
    _check_rollout(ck, plans)
    _check_serving(ck, plans)
    _check_gateway(ck)
    ck.raise_if_any()
    derive_in_order(ck, plans, _ensemble)  # ensembles and calling plugins, each after the models it calls
    ck.raise_if_any()
    if ck.rules.server_config_rules:
        ensemble_rules(ck, plans, device)
    ck.raise_if_any()
    for p in plans.values():  # after derivation: ensembles and plugins know their inputs only now
        p.extra_files.update(_smoke_inputs(ck, p))
        if p.spec.plugin is not None:
            p.extra_files.update(drift_reference(ck, p, warnings))
    ck.raise_if_any()
    name = loaded.spec.repository or loaded.path.parent.name
    return RepositoryPlan(
        name=name,
        device=device,
        spec_path=loaded.path,
        spec_sha256=loaded.sha256,
        models=list(plans.values()),
        warnings=warnings,
        deploy=loaded.spec.deploy.model_dump(mode="json", by_alias=True, exclude_unset=True),
        rollout=loaded.spec.rollout.model_dump(mode="json", exclude_unset=True)
        if loaded.spec.rollout is not None
        else None,
        serving=loaded.spec.serving.model_dump(mode="json") if loaded.spec.serving is not None else None,
        gateway=sections(loaded.spec.gateway, loaded.spec.async_),
    )
