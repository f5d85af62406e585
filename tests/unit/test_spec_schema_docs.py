"""Every spec field carries a description in `repoforge schema`: editors show it as hover help, so a new
field added without `Field(description=...)` fails here rather than shipping as a bare name."""

from __future__ import annotations

from typing import Any

import pytest

from repoforge.schema import spec_schema


def _objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The root object and every definition that has properties (one per pydantic model)."""
    found = {"<root>": schema, **schema.get("$defs", {})}
    return {name: d for name, d in found.items() if "properties" in d}


def _described(node: dict[str, Any]) -> bool:
    text = node.get("description")
    return isinstance(text, str) and bool(text.strip())


def test_schema_has_the_plugin_and_model_definitions() -> None:
    """Guards the walk below: it must see the nested models, not only the root."""
    names = set(_objects(spec_schema()))
    assert {"<root>", "ModelSpec", "TensorSpec", "FeaturesPlugin", "RouterPlugin", "Shadow"} <= names


@pytest.mark.parametrize("name", sorted(_objects(spec_schema())))
def test_every_property_has_a_description(name: str) -> None:
    obj = _objects(spec_schema())[name]
    missing = [prop for prop, node in obj["properties"].items() if not _described(node)]
    assert not missing, f"{name}: give these fields Field(description=...): {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(_objects(spec_schema())))
def test_every_model_has_a_description(name: str) -> None:
    """pydantic turns the class docstring into the definition's description."""
    assert _described(_objects(spec_schema())[name]), f"{name}: give the model class a docstring"
