"""Read a Triton `config.pbtxt` (protobuf text format) inside a server, where protobuf's own parser and Triton's
config message are not importable (runtime/ is a leaf). Enough of the format for what the router asks of a route's
config: fields, nested messages, lists and the `parameters` map; values stay strings and numbers."""

from __future__ import annotations

import re
from typing import Any

#: A message: each field name to its values in file order (text format repeats a field or lists it in [...]).
Message = dict[str, list[Any]]

_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)|(?P<tok>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[{}\[\]:,;<>]|[^\s{}\[\]:,;<>"'\#]+)"""
)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "'": b"'", "\\": b"\\", "a": b"\a", "b": b"\b",
            "f": b"\f", "v": b"\v", "?": b"?"}  # fmt: skip


class PbtxtError(ValueError):
    """The text is not a text-format message this reader understands."""


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PbtxtError(f"cannot read the text at offset {pos}: {text[pos : pos + 20]!r}")
        if m.group("tok") is not None:
            out.append(m.group("tok"))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    """A text-format string literal (C escapes, octal bytes as protobuf writes non-ASCII text) as str."""
    body, out, i = token[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in "01234567":
            j = i + 1
            while j < min(i + 4, len(body)) and body[j] in "01234567":
                j += 1
            out.append(int(body[i + 1 : j], 8) & 0xFF)
            i = j
        elif nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            if not m:
                raise PbtxtError(f"bad escape in {token!r}")
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        else:
            out += _ESCAPES.get(nxt, nxt.encode())
            i += 2
    return out.decode("utf-8", errors="replace")


def _scalar(token: str) -> Any:
    if token[0] in "\"'":
        return _unquote(token)
    try:
        return int(token, 0)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token  # an enum name (KIND_CPU, TYPE_FP32) or true/false


class _Reader:
    def __init__(self, tokens: list[str]) -> None:
        self.t, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> str:
        if self.i >= len(self.t):
            raise PbtxtError("unexpected end of the text")
        self.i += 1
        return self.t[self.i - 1]

    def message(self, close: str | None) -> Message:
        msg: Message = {}
        while True:
            tok = self.peek()
            if tok is None:
                if close is not None:
                    raise PbtxtError(f"missing '{close}'")
                return msg
            if tok == close:
                self.take()
                return msg
            if tok in ",;":
                self.take()
                continue
            name = self.take()
            if self.peek() == ":":
                self.take()
            msg.setdefault(name, []).extend(self.values())

    def values(self) -> list[Any]:
        tok = self.take()
        if tok in ("{", "<"):
            return [self.message("}" if tok == "{" else ">")]
        if tok == "[":
            out: list[Any] = []
            while self.peek() != "]":
                if self.peek() == ",":
                    self.take()
                    continue
                out.extend(self.values())
            self.take()
            return out
        # adjacent string literals concatenate ("a" "b")
        if tok[0] in "\"'":
            parts = [_unquote(tok)]
            while (nxt := self.peek()) is not None and nxt[0] in "\"'":
                parts.append(_unquote(self.take()))
            return ["".join(parts)]
        return [_scalar(tok)]


def parse(text: str) -> Message:
    """The top-level message of `text`; PbtxtError when it is not text format."""
    return _Reader(_tokens(text)).message(None)


def one(msg: Message, field: str, default: Any = None) -> Any:
    """The field's last value (text format's rule for a singular field), or `default`."""
    values = msg.get(field)
    return values[-1] if values else default


def string_map(msg: Message, field: str = "parameters") -> dict[str, str]:
    """A `map<string, ModelParameter>` such as Triton's `parameters`, as key -> string_value."""
    out = {}
    for entry in msg.get(field, []):
        value = one(entry, "value", {})
        out[str(one(entry, "key", ""))] = str(one(value, "string_value", "")) if isinstance(value, dict) else ""
    return out
