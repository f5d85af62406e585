"""YAML loading that remembers where every value came from.

PyYAML's composer keeps start marks on every node; we keep them in a map keyed by the value's path
(`("models", 0, "dynamic_batching")`) so pydantic errors and cross-model checks can both point at
`file:line:column`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repoforge.errors import Location, Problem, SpecError

PathKey = tuple[str | int, ...]


@dataclass
class YamlSource:
    """Parsed YAML plus the positions of every key and value in it."""

    file: str
    data: Any
    value_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """Best location for `path`: the exact node, else the nearest ancestor that exists."""
        marks = self.key_marks if key else self.value_marks
        p = tuple(path)
        while True:
            if p in marks:
                line, col = marks[p]
                return Location(self.file, line, col)
            if key and p in self.value_marks:
                line, col = self.value_marks[p]
                return Location(self.file, line, col)
            if not p:
                return Location(self.file, 1, 1)
            p = p[:-1]


class _Loader(yaml.SafeLoader):
    """SafeLoader; we only use it to compose nodes and construct scalars."""


def _walk(node: yaml.Node, path: PathKey, src: YamlSource, loader: _Loader) -> Any:
    src.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    [
                        Problem(
                            Location(src.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                            "",
                            "YAML merge keys (<<) are not supported; use `defaults:` instead",
                        )
                    ]
                )
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise SpecError(
                    [
                        Problem(
                            Location(src.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                            "",
                            "mapping keys must be plain values",
                        )
                    ]
                )
            if key in out:
                loc = Location(src.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                raise SpecError([Problem(loc, _fmt(path + (key,)), f"duplicate key '{key}'")])
            src.key_marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _walk(value_node, path + (key,), src, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), src, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _fmt(path: PathKey) -> str:
    return format_path(path)


def format_path(path: PathKey) -> str:
    """`("models", 0, "inputs")` → `models[0].inputs`, the way users think about a spec."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(text: str, file: str) -> YamlSource:
    """Parse YAML text; syntax errors become a SpecError at the offending line."""
    src = YamlSource(file=file, data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(
                [
                    Problem(
                        Location(file, 1, 1),
                        "",
                        "the spec is empty; expected a mapping with `version: 1` and `models:`",
                    )
                ]
            )
        src.data = _walk(node, (), src, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise SpecError([Problem(loc, "", f"invalid YAML: {exc.problem or exc.context}")]) from None
    finally:
        loader.dispose()
    return src


def read_yaml(path: Path, display: str | None = None) -> YamlSource:
    """Read and parse a YAML file, naming it as `display` in messages."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(Location(name), "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(Location(name), "", f"not UTF-8 text ({exc.reason})")]) from None
    return load_yaml(text, name)
