"""Write settings into a user's spec.yaml in place, keeping its comments, key order, quoting and flow style
(ruamel.yaml round-trip), so `tune --apply` leaves a diff of only the values that changed."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from repoforge.errors import RepoforgeError


def apply_patch(spec: Path, patch: dict[str, Any]) -> list[str]:
    """Merge ``patch`` (``models: [{name, field: value, ...}]``, as tune's spec-patch.yaml) into the models of
    ``spec`` of the same names, in place and atomically; returns the field paths whose value changed.

    Mappings merge key by key; a list of mappings of the same length merges item by item; anything else is
    replaced, a replaced flow-style (``[a, b]``) value staying flow-style.
    """
    text = spec.read_text(encoding="utf-8")
    yaml = _round_trip(text)
    data = yaml.load(text)
    models = data.get("models") if isinstance(data, CommentedMap) else None
    if not isinstance(models, CommentedSeq):
        raise RepoforgeError(f"{spec} has no `models:` list to write into")
    changed: list[str] = []
    for entry in patch.get("models", []):
        index = next((i for i, m in enumerate(models) if isinstance(m, CommentedMap) and m.get("name") == entry["name"]), None)  # fmt: skip
        if index is None:
            raise RepoforgeError(f"{spec} has no model named '{entry['name']}' to write the tuned settings into")
        fields = {k: v for k, v in entry.items() if k != "name"}
        _merge(models[index], fields, f"models[{index}]", changed)
    out = io.StringIO()
    yaml.dump(data, out)
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".tmp", dir=spec.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(out.getvalue())
        os.chmod(tmp, spec.stat().st_mode & 0o777)
        os.replace(tmp, spec)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return changed


def _round_trip(text: str) -> YAML:
    """A round-trip YAML (comments, order, quotes and flow style survive) indenting lists as `text` does."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a user's long line
    found = re.search(r"^models:[ \t]*(?:#.*)?\n(?:[ \t]*(?:#.*)?\n)*( *)- ", text, re.M)
    offset = len(found.group(1)) if found else 2  # `models:\n  - name: m`, as the starter spec writes it
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    return yaml


def _merge(dst: CommentedMap, src: dict[str, Any], path: str, changed: list[str]) -> None:
    for key, new in src.items():
        old, where = dst.get(key), f"{path}.{key}"
        if isinstance(new, dict) and isinstance(old, CommentedMap):
            _merge(old, new, where, changed)
        elif (isinstance(new, list) and isinstance(old, CommentedSeq) and len(new) == len(old) and new
              and all(isinstance(n, dict) and isinstance(o, CommentedMap) for n, o in zip(new, old, strict=True))):  # fmt: skip
            for i, (n, o) in enumerate(zip(new, old, strict=True)):
                _merge(o, n, f"{where}[{i}]", changed)
        elif _plain(old) != new:
            dst[key] = _styled(new, flow=_is_flow(old))
            changed.append(where)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_flow(value: Any) -> bool:
    return isinstance(value, CommentedMap | CommentedSeq) and bool(value.fa.flow_style())


def _styled(value: Any, flow: bool) -> Any:
    if isinstance(value, dict):
        m = CommentedMap((k, _styled(v, flow)) for k, v in value.items())
        if flow:
            m.fa.set_flow_style()
        return m
    if isinstance(value, list):
        s = CommentedSeq(_styled(v, flow) for v in value)
        if flow or all(not isinstance(v, dict | list) for v in value):  # a list of numbers reads best as [a, b]
            s.fa.set_flow_style()
        return s
    return value
