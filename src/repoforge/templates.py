"""Jinja2 rendering of `model_repo_templates/` (the generated text files that are neither protobuf nor structured
YAML/JSON: config.properties, each built repository's README.md). Protobuf configs are built as `ModelConfig`
messages and YAML/JSON as dicts; only free text goes through templates."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # StrictUndefined: a template naming a value the caller did not pass fails the build, not the user.
    loader = jinja2.FileSystemLoader(str(resources.files("repoforge.model_repo_templates")))
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **context: Any) -> str:
    """`model_repo_templates/<name>.j2` with `context`."""
    return _environment().get_template(f"{name}.j2").render(**context)
