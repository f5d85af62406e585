"""Where each field of a config.pbtxt is written, so findings can say ``config.pbtxt:12:5``.

``text_format.Parse`` does not keep positions, so after a successful parse the text is walked
once more with protobuf's own tokenizer, guided by the message descriptors (which fields are
repeated, which are messages, which are maps). The result maps a *path* to a 1-based
``(line, column)``:

* ``("input", 1, "dims")`` - the ``dims`` of the second ``input``;
* ``("ensemble_scheduling", "step", 0, "input_map", Key("IN"))`` - a map entry, by its key;
* ``("dynamic_batching",)`` - the first place the field name appears.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import TypeAlias

from google.protobuf import descriptor as _descriptor
from google.protobuf import text_format


class Key(str):
    """A map key inside a path (rendered ``[key]``)."""

    __slots__ = ()


PathElem: TypeAlias = str | int | Key
Path: TypeAlias = tuple[PathElem, ...]
Positions: TypeAlias = dict[Path, tuple[int, int]]

_REPEATED = _descriptor.FieldDescriptor.LABEL_REPEATED
_MESSAGE = _descriptor.FieldDescriptor.TYPE_MESSAGE
_GROUP = _descriptor.FieldDescriptor.TYPE_GROUP


def format_path(path: Path) -> str:
    """``("input", 0, "dims")`` -> ``input[0].dims``; map keys -> ``input_map[IN]``."""
    out = ""
    for elem in path:
        if isinstance(elem, (Key, int)):
            out += f"[{elem}]"
        else:
            out += ("." if out else "") + elem
    return out


class _Walker:
    def __init__(self, text: str) -> None:
        self.tok = text_format.Tokenizer(text.splitlines(keepends=True))
        self.pos: Positions = {}

    def here(self) -> tuple[int, int]:
        return self.tok._line + 1, self.tok._column + 1

    def message(self, desc: _descriptor.Descriptor, prefix: Path, end: str | None) -> dict[str, str]:
        """Walk the fields of one message until ``end`` (None = end of text). Returns the raw
        scalar values of its non-repeated fields (used for map keys)."""
        tok = self.tok
        counts: dict[str, int] = defaultdict(int)
        scalars: dict[str, str] = {}
        while not tok.AtEnd() and (end is None or tok.token != end):
            start = self.here()
            name = tok.token
            tok.NextToken()
            field = desc.fields_by_name.get(name)
            if field is None:  # cannot happen after a successful parse; stay robust anyway
                return scalars
            self.pos.setdefault((*prefix, name), start)
            if tok.token == ":":
                tok.NextToken()
            repeated = field.label == _REPEATED
            if tok.token == "[":  # list syntax: name: [a, b] / name [{...}, {...}]
                tok.NextToken()
                while tok.token != "]":
                    path = (*prefix, name, counts[name])
                    counts[name] += 1
                    self.pos[path] = self.here()
                    self.value(field, path)
                    if tok.token == ",":
                        tok.NextToken()
                tok.NextToken()
            else:
                path = (*prefix, name, counts[name]) if repeated else (*prefix, name)
                if repeated:
                    counts[name] += 1
                self.pos[path] = start
                raw = self.value(field, path)
                if raw is not None and not repeated:
                    scalars[name] = raw
            if tok.token in (",", ";"):
                tok.NextToken()
        return scalars

    def value(self, field: _descriptor.FieldDescriptor, path: Path) -> str | None:
        tok = self.tok
        if field.type in (_MESSAGE, _GROUP):
            close = "}" if tok.token == "{" else ">"
            tok.NextToken()
            sub = self.message(field.message_type, path, close)
            tok.NextToken()
            if field.message_type.GetOptions().map_entry and "key" in sub:
                self.pos.setdefault((*path[:-1], Key(sub["key"])), self.pos[path])
            return None
        if tok.token.startswith(("'", '"')):
            return str(tok.ConsumeString())
        raw = tok.token
        tok.NextToken()
        if raw == "-":  # "- 1" written with a space
            raw += tok.token
            tok.NextToken()
        return raw


def positions(text: str, descriptor: _descriptor.Descriptor) -> Positions:
    """Positions of every field written in ``text`` (which must parse as ``descriptor``)."""
    walker = _Walker(text)
    with contextlib.suppress(Exception):  # positions are a convenience; never let them break lint
        walker.message(descriptor, (), None)
    return walker.pos


def lookup(pos: Positions | None, path: Path) -> tuple[int | None, int | None]:
    """The position of ``path`` or of its closest written ancestor; (None, None) if none."""
    if not pos:
        return None, None
    for n in range(len(path), 0, -1):
        hit = pos.get(path[:n])
        if hit is not None:
            return hit
    return None, None
