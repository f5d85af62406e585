"""Config path -> spec path: where in spec.yaml the user wrote what a `ModelConfig` field was built from.

`triton.config.build_config` is the forward map (spec -> config); this is its inverse for *locations*, so a
Triton rule found on the built config (repoforge.lint.rules) is reported at the spec's file:line. A field
that comes from `defaults:` is reported there; a field the spec does not write (filled from an ONNX file, or
merged from `raw_config`) is reported at the model, or at its raw_config.
"""

from __future__ import annotations

from repoforge.spec.load import LoadedSpec
from repoforge.spec.models import ModelSpec
from repoforge.spec.yamlsource import PathKey

#: config field -> spec field, for the top-level sections a spec writes
SECTIONS = {
    "dynamic_batching": "dynamic_batching",
    "sequence_batching": "sequence_batching",
    "model_warmup": "warmup",
    "response_cache": "response_cache",
    "instance_group": "instance_groups",
    "input": "inputs",
    "output": "outputs",
    "batch_input": "batch_inputs",
    "batch_output": "batch_outputs",
    "max_batch_size": "max_batch_size",
}
#: config field -> spec field inside a section (the names that differ; the rest are the same word)
FIELDS = {
    "preferred_batch_size": "preferred_batch_sizes",
    "default_queue_policy": "queue_policy",
    "default_timeout_microseconds": "timeout_us",
    "max_queue_delay_microseconds": "max_queue_delay_us",
    "data_type": "dtype",
    "source_input": "source_inputs",
    "target_name": "target_names",
    "control_input": "control_inputs",
    # ensemble_scheduling.step[s]
    "model_name": "model",
    "model_version": "version",
    "input_map": "inputs",
    "output_map": "outputs",
}
#: sections whose items are one-to-one with a spec list (config index i is spec index i)
_LISTS = {"instance_group", "input", "output", "batch_input", "batch_output"}


def _inner(section: str, rest: tuple[object, ...]) -> tuple[str | int, ...]:
    """The path inside one section, in spec words."""
    if section == "model_warmup":  # one model_warmup per warmup batch size, in order
        return ("batch_sizes", rest[0]) if len(rest) >= 2 and rest[1] == "batch_size" else ()  # type: ignore[return-value]
    if section == "sequence_batching":
        if rest[:1] in (("oldest",), ("direct",)):  # the strategy's fields sit on sequence_batching in a spec
            rest = rest[1:]
        if rest[:1] == ("control_input",) and len(rest) >= 2:  # control_input[j].control[0].data_type -> dtype
            tail = "dtype" if rest[-1] == "data_type" else "name" if rest[2:3] == ("name",) else None
            return ("control_inputs", rest[1], tail) if tail else ("control_inputs", rest[1])  # type: ignore[return-value]
    out: list[str | int] = []
    for elem in rest:
        if isinstance(elem, int):
            out.append(elem)
        elif type(elem) is not str:  # a map key (lint.locate.Key): priority levels are numbers in a spec
            out.append(int(str(elem)) if out[-1:] == ["priority_queue_policy"] else str(elem))
        else:
            out.append(FIELDS.get(elem, elem))
    return tuple(out)


def spec_path(loaded: LoadedSpec, index: int, m: ModelSpec, config_path: tuple[object, ...]) -> PathKey:
    """Where model `index` of the spec writes what `config_path` (e.g. ("dynamic_batching", "preferred_batch_size",
    1)) was built from; the model itself when nothing in the spec does."""
    model: PathKey = ("models", index)
    fallback: PathKey = (*model, "raw_config") if m.raw_config else model
    section = str(config_path[0]) if config_path else ""
    if section == "ensemble_scheduling":  # ensemble_scheduling.step[s].input_map[K] -> steps[s].inputs.K
        rest = config_path[2:]
        if config_path[1:2] != ("step",) or not rest or not isinstance(rest[0], int) or rest[0] >= len(m.steps or []):
            return (*model, "steps") if m.steps is not None else model
        return (*model, "steps", rest[0], *_inner(section, rest[1:]))
    spec_field = SECTIONS.get(section)
    if spec_field is None:
        return fallback
    rest = config_path[1:]
    if section in _LISTS:  # an item the spec does not list (read from the ONNX file, or from raw_config)
        declared = getattr(m, spec_field) or []
        if not rest or not isinstance(rest[0], int) or rest[0] >= len(declared):
            return fallback
    root = loaded.origin(index, spec_field)
    if root == model:  # the spec does not write this section: it was filled in (ONNX file, defaults of repoforge)
        return fallback
    return (*root, *_inner(section, rest))
