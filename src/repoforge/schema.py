"""`repoforge schema`: the JSON Schema of the spec, for editor completion and validation (e.g. the
YAML language server's `# yaml-language-server: $schema=...`)."""

from __future__ import annotations

from typing import Any

from repoforge.spec.models import Spec


def spec_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "repoforge spec v1"
    return schema
