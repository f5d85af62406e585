"""Load `spec.yaml` into a validated `Spec`, turning every pydantic error into `file:line:col field: message`."""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from repoforge.errors import Problem, SpecError, relpath_for_messages
from repoforge.spec.gateway import conflicts, sections
from repoforge.spec.models import DEFAULTABLE, ModelSpec, Spec
from repoforge.spec.yamlsource import PathKey, YamlSource, format_path, read_yaml


@dataclass
class LoadedSpec:
    """A validated spec with its source, so later stages can still point at lines."""

    spec: Spec
    source: YamlSource
    path: Path
    sha256: str

    @property
    def base_dir(self) -> Path:
        """Model paths in the spec are relative to the spec file."""
        return self.path.parent

    def problem(self, path: PathKey, message: str, *, key: bool = False) -> Problem:
        return Problem(self.source.locate(path, key=key), format_path(path), message)

    def model_path(self, index: int, *rest: str | int) -> PathKey:
        return ("models", index, *rest)

    def sets(self, index: int, field: str) -> bool:
        """Whether the model itself (not `defaults:`) writes `field`."""
        return field in self.spec.models[index].model_fields_set

    def origin(self, index: int, field: str) -> PathKey:
        """Where a model's (possibly defaulted) field was written: the model, else `defaults`."""
        if field in self.spec.models[index].model_fields_set:
            return ("models", index, field)
        if field in DEFAULTABLE and field in self.spec.defaults.model_fields_set:
            return ("defaults", field)
        return ("models", index)


def _unwrap(annotation: Any) -> Any:
    """The BaseModel class inside Optional[...], list[...] or dict[..., ...], if any."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if origin in (list, dict):
        return _unwrap(typing.get_args(annotation)[-1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that a validation error location points into."""
    cls: type[BaseModel] | None = Spec
    for part in loc:
        if cls is None:
            return None
        if not isinstance(part, int):  # an aliased field (`async:`) is its field (`async_`)
            part = next((n for n, f in cls.model_fields.items() if f.alias == part), part)
        if isinstance(part, int) or part not in cls.model_fields:
            # list index / dict key: stay on the element type we already unwrapped
            if isinstance(part, int) or any(part == f.alias for f in cls.model_fields.values()):
                continue
            return cls if part == loc[-1] else None
        cls = _unwrap(cls.model_fields[part].annotation)
    return cls


def _field_names(cls: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in cls.model_fields.items()]


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    loc = err["loc"]
    got = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        owner = _model_at(tuple(loc[:-1]))
        names = _field_names(owner) if owner else []
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hint = (
            f" (did you mean '{close[0]}'?)" if close else (f"; expected one of: {', '.join(names)}" if names else "")
        )
        return f"unknown field '{key}'{hint}"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if (
        kind.startswith(
            ("int_", "float_", "bool_", "string_", "list_", "dict_", "model_", "literal_", "greater", "less")
        )
        and got is not None
    ):
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        return f"{msg} (got {shown})"
    return msg


def _clean_loc(loc: tuple[Any, ...]) -> PathKey:
    """Drop pydantic's internal tags (e.g. `[key]` markers and function names) from a location."""
    return tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "[")))


def problems_from_validation(exc: ValidationError, source: YamlSource) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        location = source.locate(loc, key=err["type"] == "extra_forbidden")
        problems.append(Problem(location, format_path(loc), _message({**err, "loc": loc})))
    return problems


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, parse and validate a spec file. Raises SpecError listing every problem found."""
    spec_path = Path(path)
    display = relpath_for_messages(spec_path)
    source = read_yaml(spec_path, display)
    if not isinstance(source.data, dict):
        raise SpecError([Problem(source.locate(()), "", "the spec must be a mapping with `version: 1` and `models:`")])
    try:
        spec = Spec.model_validate(source.data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, source)) from None
    loaded = LoadedSpec(
        spec=spec, source=source, path=spec_path.resolve(), sha256=hashlib.sha256(spec_path.read_bytes()).hexdigest()
    )
    _check_unique_names(loaded)
    _check_gateway_sections(loaded)
    return loaded


def _check_gateway_sections(loaded: LoadedSpec) -> None:
    """`deploy.gateway` may set what `gateway:`/`async:` set, but not to another value (located where it differs)."""
    spec = loaded.spec
    if spec.deploy.gateway is None:
        return
    written = spec.deploy.gateway.model_dump(mode="json", by_alias=True, exclude_unset=True)
    found = conflicts(sections(spec.gateway, spec.async_), written)
    if found:
        raise SpecError([loaded.problem(path, message) for path, message in found])


def _check_unique_names(loaded: LoadedSpec) -> None:
    seen: dict[str, int] = {}
    problems = []
    for i, m in enumerate(loaded.spec.models):
        if m.name in seen:
            problems.append(
                loaded.problem(
                    ("models", i, "name"), f"model name '{m.name}' is already used by models[{seen[m.name]}]"
                )
            )
        seen.setdefault(m.name, i)
    if problems:
        raise SpecError(problems)


# Defaults that make no sense for some models are not applied to them (instead of being errors there).
# (an ensemble's max_batch_size follows its steps).
_NOT_FOR_ENSEMBLES = {"instance_groups", "dynamic_batching", "warmup", "optimization", "max_batch_size"}


def effective(loaded: LoadedSpec, model: ModelSpec) -> ModelSpec:
    """The model with `defaults:` merged in for every field it does not set itself and that applies to it."""
    skip = set(_NOT_FOR_ENSEMBLES) if model.format == "ensemble" else set()
    if model.sequence_batching is not None:
        skip.add("dynamic_batching")
    updates = {
        f: getattr(loaded.spec.defaults, f)
        for f in DEFAULTABLE
        if f not in model.model_fields_set and f not in skip and getattr(loaded.spec.defaults, f) is not None
    }
    return model.model_copy(update=updates) if updates else model
