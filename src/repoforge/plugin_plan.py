"""Planning of `plugin:` models: their inputs/outputs come from the plugin config (features) or from the
models they call (result_cache, semantic_cache, router), and they are served by the runner glue with
`repoforge_runner: <kind>`; the typed config (`spec.plugin`) reaches the runner as JSON in the `repoforge_plugin`
parameter, written by `triton.config.build_config`.

Called from `repoforge.plan.make_plan`; problems go to its checker with exact spec locations.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from repoforge.backends import model_file as backend_model_file
from repoforge.contract import DRIFT_REFERENCE
from repoforge.drift.data import DriftError
from repoforge.drift.online import InputInfo, match_features
from repoforge.drift.profile import read_profile
from repoforge.graph import in_dependency_order
from repoforge.plan_base import Checker, ModelPlan, ServingChoice, check_batching, check_common, resolve_file
from repoforge.spec.models import ModelSpec, TensorSpec
from repoforge.spec.plugins import (
    FeaturesPlugin,
    RelPath,
    ResultCachePlugin,
    RouterPlugin,
    SemanticCachePlugin,
    check_features,
    output_dim,
)

# Used when neither the model nor `defaults:` sets max_batch_size (features); result_cache and router
# follow the model(s) they call.
DEFAULT_PLUGIN_MAX_BATCH_SIZE = 64


def plugin_model_plan(ck: Checker, i: int, m: ModelSpec, device: str) -> ModelPlan:
    """The plan of a plugin model; result_cache/router I/O is filled in later by `resolve_plugin`."""
    plugin = m.plugin
    assert plugin is not None
    where = ("models", i)
    if m.format != "python":
        ck.add(
            (*where, "format"), f"a {plugin.kind} plugin is served by repoforge's Python backend; set format: python"
        )
    if m.path:
        ck.add((*where, "path"), f"a {plugin.kind} plugin has no model file; remove `path` (the plugin is its code)")
    if m.versions and any(v is not None for v in m.versions.values()):
        ck.add((*where, "versions"), "a plugin model has no model files; list version numbers only")
    for kind in ("inputs", "outputs"):
        if getattr(m, kind) is not None:
            ck.add((*where, kind), f"the {kind} of a {plugin.kind} plugin are derived from its config; remove `{kind}`")
    if ck.rules.plugin_kinds is not None and plugin.kind not in ck.rules.plugin_kinds:
        ck.add(
            (*where, "plugin", "kind"),
            f"a {plugin.kind} plugin runs on --target triton only: "
            "it calls other models with Triton's BLS and has no TorchServe form",
        )
    if m.sequence_batching is not None:
        ck.add((*where, "sequence_batching"), "plugins do not support sequence batching")
    if m.model_transaction_policy is not None and m.model_transaction_policy.decoupled:
        ck.add((*where, "model_transaction_policy"), "plugins are not decoupled (streaming) models")
    mbs = m.max_batch_size if m.max_batch_size is not None else DEFAULT_PLUGIN_MAX_BATCH_SIZE
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    if isinstance(plugin, FeaturesPlugin):
        if plugin.model is not None and ck.rules.plugin_kinds is not None:  # such targets run no calling plugin
            ck.add(
                (*where, "plugin", "model"),
                "a features plugin calls its `model` with Triton's BLS and runs on --target triton only; "
                "remove `model` and chain the two another way (a TorchServe workflow)",
            )
        for field in ("version", "model_input", "in_process"):
            if field in plugin.model_fields_set and plugin.model is None:
                ck.add(
                    (*where, "plugin", field), f"`{field}` applies to the features' `model`; set `model` or remove it"
                )
        problems = check_features(plugin)
        for rel, msg in problems:
            ck.add((*where, "plugin", *rel), msg)
        batch: list[int] = [] if mbs > 0 else [-1]
        inputs = [TensorSpec(name=c.name, dtype=c.dtype, dims=[*batch, c.width]) for c in plugin.columns]
        if not problems:
            outputs = [TensorSpec(name=plugin.output, dtype="FP32", dims=[*batch, output_dim(plugin)])]
    check_common(ck, i, m)
    dyn = check_batching(ck, i, m, mbs)
    serving = ServingChoice(backend="python", runner=plugin.kind)
    glue = backend_model_file(plugin.kind)  # the plugin's own backends/<kind>/model.py is its code
    versions: dict[int, Path | None] = {v: glue for v in (m.versions or {1: None})}
    return ModelPlan(
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
        instance_kind_default="cpu",
    )


def _refs(p: ModelPlan) -> list[tuple[tuple[str | int, ...], str]]:
    """(path inside the model, referenced model) for an ensemble's steps or a plugin's targets."""
    plugin = p.spec.plugin
    if p.format == "ensemble" and plugin is None:
        return [(("steps", s, "model"), st.model) for s, st in enumerate(p.spec.steps or [])]
    if isinstance(plugin, (ResultCachePlugin, SemanticCachePlugin)):
        return [(("plugin", "model"), plugin.model)]
    if isinstance(plugin, FeaturesPlugin) and plugin.model is not None:
        return [(("plugin", "model"), plugin.model)]
    if isinstance(plugin, RouterPlugin):
        out: list[tuple[tuple[str | int, ...], str]] = [
            (("plugin", "routes", j, "model"), r.model) for j, r in enumerate(plugin.routes)
        ]
        if plugin.canary:
            out.append((("plugin", "canary", "model"), plugin.canary.model))
        if plugin.shadow:
            out.append((("plugin", "shadow", "model"), plugin.shadow.model))
        return out
    return []


def _derived(p: ModelPlan) -> bool:
    plugin = p.spec.plugin
    return (
        (p.format == "ensemble" and plugin is None)
        or isinstance(plugin, (ResultCachePlugin, SemanticCachePlugin, RouterPlugin))
        or (isinstance(plugin, FeaturesPlugin) and plugin.model is not None)
    )


def derive_in_order(
    ck: Checker, plans: dict[str, ModelPlan], ensemble: Callable[[Checker, dict[str, ModelPlan], ModelPlan], None]
) -> None:
    """Derive the I/O of ensembles and calling plugins, each after the models it calls (a cycle is an error)."""

    def needs(name: str) -> list[tuple[str, RelPath]]:
        p = plans[name]
        return [(dep, rel) for rel, dep in _refs(p) if dep in plans and _derived(plans[dep]) and plans[dep] is not p]

    def derive(name: str) -> None:
        p = plans[name]
        if p.format == "ensemble" and p.spec.plugin is None:
            ensemble(ck, plans, p)
        else:
            resolve_plugin(ck, plans, p)

    def cycle(name: str, dep: str, rel: RelPath) -> None:
        ck.add(("models", plans[name].index, *rel), f"'{name}' and '{dep}' call each other (a cycle)")

    in_dependency_order([p.name for p in plans.values() if _derived(p)], needs, derive, cycle)


def _target(
    ck: Checker,
    plans: dict[str, ModelPlan],
    p: ModelPlan,
    rel: tuple[str | int, ...],
    name: str,
    version: int,
    role: str,
) -> ModelPlan | None:
    where = ("models", p.index, *rel)
    if name == p.name:
        ck.add(where, f"a {role} cannot call itself")
        return None
    t = plans.get(name)
    if t is None:
        ck.add(
            where,
            f"{role} names model '{name}', which is not in the spec; models are: {', '.join(sorted(n for n in plans if n != p.name))}",
        )
        return None
    if version != -1 and version not in t.versions:
        ck.add(where, f"model '{name}' has no version {version} (versions: {sorted(t.versions)})")
    if t.spec.model_transaction_policy is not None and t.spec.model_transaction_policy.decoupled:
        ck.add(where, f"model '{name}' is decoupled (streaming); a {role} needs one response per request")
        return None
    return t


def _sig(ts: list[TensorSpec]) -> list[tuple[str, str, tuple[int, ...]]]:
    return sorted((t.name, t.dtype, tuple(t.dims)) for t in ts)


def _fmt(ts: list[TensorSpec]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.dims}" for t in ts) or "none"


def _batch(ck: Checker, p: ModelPlan, targets: list[ModelPlan]) -> None:
    limit = min(t.max_batch_size for t in targets)
    if p.spec.max_batch_size is None:
        p.max_batch_size = limit
    elif p.max_batch_size > limit:
        ck.add(
            ck.loaded.origin(p.index, "max_batch_size"),
            f"max_batch_size {p.max_batch_size} exceeds that of the model(s) it calls ({limit})",
        )
    if (p.max_batch_size == 0) != (limit == 0):
        ck.add(
            ck.loaded.origin(p.index, "max_batch_size"),
            "a plugin and the models it calls must agree on batching (max_batch_size 0 or > 0)",
        )
    if p.max_batch_size == 0:
        p.dynamic_batching = False


def resolve_plugin(ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan) -> None:
    """A plugin's tensors and batching come from the model(s) it calls, once those are planned."""
    plugin: Any = p.spec.plugin
    if isinstance(plugin, ResultCachePlugin):
        _resolve_result_cache(ck, plans, p, plugin)
    elif isinstance(plugin, SemanticCachePlugin):
        _resolve_semantic_cache(ck, plans, p, plugin)
    elif isinstance(plugin, RouterPlugin):
        _resolve_router(ck, plans, p, plugin)
    elif isinstance(plugin, FeaturesPlugin):
        _resolve_features_model(ck, plans, p, plugin)


def _resolve_features_model(ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan, plugin: FeaturesPlugin) -> None:
    """Features with a `model`: the features feed one input of that model, whose outputs the plugin answers.
    The input it feeds is written back into the plugin's config (`model_input`), which the runtime reads."""
    assert plugin.model is not None
    where = ("models", p.index, "plugin")
    t = _target(ck, plans, p, ("plugin", "model"), plugin.model, plugin.version, "features plugin")
    if t is None or not p.outputs:  # no outputs: the features themselves are wrong (reported)
        return
    feats = p.outputs[0]
    if t.max_batch_size == 0:
        ck.add(
            (*where, "model"), f"model '{t.name}' does not batch (max_batch_size 0); the features feed it in batches"
        )
        return
    if plugin.model_input is None:
        if len(t.inputs) != 1:
            ck.add(
                (*where, "model"),
                f"model '{t.name}' has inputs {', '.join(x.name for x in t.inputs)}; "
                "set model_input to the one that takes the features",
            )
            return
        target_input = t.inputs[0]
    else:
        found = next((x for x in t.inputs if x.name == plugin.model_input), None)
        if found is None:
            ck.add(
                (*where, "model_input"),
                f"'{plugin.model_input}' is not an input of '{t.name}'; its inputs are {', '.join(x.name for x in t.inputs)}",
            )
            return
        target_input = found
    others = [x.name for x in t.inputs if x is not target_input and not x.optional]
    if others:
        ck.add(
            (*where, "model"), f"model '{t.name}' also needs {', '.join(others)}; the features plugin feeds one input"
        )
        return
    dims = list(target_input.dims)
    if target_input.dtype != "FP32" or len(dims) != 1 or dims[0] not in (-1, feats.dims[-1]):
        ck.add(
            (*where, "model"),
            f"input '{target_input.name}' of '{t.name}' is {target_input.dtype} {dims}; "
            f"the features are FP32 [{feats.dims[-1]}]",
        )
        return
    plugin.model_input = target_input.name
    p.outputs = list(t.outputs)
    _batch(ck, p, [t])


def _resolve_result_cache(ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan, plugin: ResultCachePlugin) -> None:
    """A result cache stands in for its model: the same tensors and batching."""
    t = _target(ck, plans, p, ("plugin", "model"), plugin.model, plugin.version, "result_cache")
    if t is None:
        return
    p.inputs, p.outputs = list(t.inputs), list(t.outputs)
    _batch(ck, p, [t])


def _resolve_semantic_cache(
    ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan, plugin: SemanticCachePlugin
) -> None:
    """A semantic cache stands in for its model, which must batch and take a fixed-size float embedding."""
    i = p.index
    t = _target(ck, plans, p, ("plugin", "model"), plugin.model, plugin.version, "semantic_cache")
    if t is None:
        return
    emb = next((x for x in t.inputs if x.name == plugin.embedding), None)
    if emb is None:
        ck.add(
            ("models", i, "plugin", "embedding"),
            f"'{plugin.embedding}' is not an input of '{t.name}'; its inputs are {', '.join(x.name for x in t.inputs)}",
        )
    elif emb.dtype not in ("FP32", "FP16", "FP64") or len(emb.dims) != 1 or emb.dims[0] < 1:
        ck.add(
            ("models", i, "plugin", "embedding"),
            f"embedding '{emb.name}' must be a float vector of fixed size (dims [d]), not {emb.dtype} {emb.dims}",
        )
    if t.max_batch_size == 0:
        ck.add(
            ("models", i, "plugin", "model"),
            f"a semantic cache answers row by row; '{t.name}' must batch (max_batch_size > 0)",
        )
        return
    p.inputs, p.outputs = list(t.inputs), list(t.outputs)
    _batch(ck, p, [t])


def _resolve_router(ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan, plugin: RouterPlugin) -> None:
    """A router serves route 0's tensors (plus its own weights input and route output) once all targets agree."""
    found = _router_targets(ck, plans, p, plugin)
    if not found or found[0][0] != ("plugin", "routes", 0, "model"):
        return
    first = found[0][1]
    if not _routes_interchangeable(ck, p, plugin, found):
        return
    _batch(ck, p, [t for _, t in found])
    p.inputs = list(first.inputs)
    if plugin.weights_input:
        p.inputs.append(TensorSpec(name=plugin.weights_input, dtype="FP32", dims=[len(plugin.targets)], optional=True))
    p.outputs = list(first.outputs)
    if plugin.route_output:
        p.outputs.append(TensorSpec(name=plugin.route_output, dtype="INT32", dims=[1]))


def _router_targets(
    ck: Checker, plans: dict[str, ModelPlan], p: ModelPlan, plugin: RouterPlugin
) -> list[tuple[tuple[str | int, ...], ModelPlan]]:
    """(spec path, plan) of every model the router names (routes, canary, shadow) that resolves, at its version."""
    found: list[tuple[tuple[str | int, ...], ModelPlan]] = []
    for rel, name in _refs(p):
        version = -1
        if rel[1] == "routes":
            version = plugin.routes[int(rel[2])].version
        elif rel[1] == "canary" and plugin.canary:
            version = plugin.canary.version
        elif rel[1] == "shadow" and plugin.shadow:
            version = plugin.shadow.version
        t = _target(ck, plans, p, rel, name, version, "router")
        if t is not None:
            found.append((rel, t))
    return found


def _routes_interchangeable(
    ck: Checker, p: ModelPlan, plugin: RouterPlugin, found: list[tuple[tuple[str | int, ...], ModelPlan]]
) -> bool:
    """Every routed model has route 0's tensors, and the router's own names neither clash nor miss; all reported."""
    i = p.index
    first = found[0][1]
    ok = True
    for rel, t in found[1:]:
        for kind in ("inputs", "outputs"):
            if _sig(getattr(t, kind)) != _sig(getattr(first, kind)):
                ck.add(
                    ("models", i, *rel),
                    f"model '{t.name}' has {kind} {_fmt(getattr(t, kind))}, but route 0 "
                    f"('{first.name}') has {_fmt(getattr(first, kind))}; routed models must be interchangeable",
                )
                ok = False
    names = {t.name for t in first.inputs} | {t.name for t in first.outputs}
    if plugin.sticky_key is not None and plugin.sticky_key not in {t.name for t in first.inputs}:
        ck.add(
            ("models", i, "plugin", "sticky_key"),
            f"sticky_key '{plugin.sticky_key}' is not an input of the routed models; inputs are {', '.join(t.name for t in first.inputs)}",
        )
        ok = False
    for field in ("route_output", "weights_input"):
        value = getattr(plugin, field)
        if value is not None and value in names:
            ck.add(
                ("models", i, "plugin", field),
                f"'{value}' is already a tensor of the routed models; choose another name",
            )
            ok = False
    return ok


def drift_reference(ck: Checker, p: ModelPlan, warnings: list[str]) -> dict[str, Path]:
    """A plugin's `drift.reference` profile, checked now against the model's inputs (its features must be
    among them, with a fitting dtype) and shipped in the model folder, where the runner reads it."""
    setting = getattr(p.spec.plugin, "drift", None)
    if setting is None:
        return {}
    if not ck.rules.drift:
        warnings.append(f"{p.name}: `drift:` is measured by the Triton plugins only; this build leaves it out")
        return {}
    where = ("models", p.index, "plugin", "drift", "reference")
    src = resolve_file(ck.loaded, setting.reference)
    if not src.is_file():
        ck.add(where, f"drift reference profile '{setting.reference}' not found (looked for {src})")
        return {}
    try:
        profile = read_profile(src)
    except DriftError as exc:
        ck.add(where, f"drift reference '{setting.reference}': {exc}")
        return {}
    plugin = p.spec.plugin
    skip = plugin.weights_input if isinstance(plugin, RouterPlugin) else None
    batched = p.max_batch_size > 0
    infos = [
        InputInfo(t.name, t.dtype, tuple(t.dims) if batched else tuple(t.dims[1:])) for t in p.inputs if t.name != skip
    ]
    _, problems, uncovered = match_features(profile["features"], infos)
    for msg in problems:
        ck.add(where, f"drift reference '{setting.reference}': {msg}")
    if not problems and uncovered:
        warnings.append(
            f"{p.name}: drift: input{'s' if len(uncovered) > 1 else ''} {', '.join(uncovered)} "
            f"{'are' if len(uncovered) > 1 else 'is'} not in the reference profile '{setting.reference}' (not monitored)"
        )
    return {DRIFT_REFERENCE: src}
