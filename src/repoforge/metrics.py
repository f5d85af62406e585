"""Read a server's Prometheus /metrics: the plugins' custom metrics, Triton's and TorchServe's series."""

from __future__ import annotations

import re
import urllib.request

_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'(\w+="[^"]*")')


def parse_prometheus(text: str, prefix: str = "") -> dict[str, float]:
    """`name{label="v",...}` → value for every sample whose name starts with `prefix`; labels are sorted
    (and a trailing comma, as TorchServe writes, is dropped) so keys can be written by hand."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1).startswith(prefix):
            labels = ",".join(sorted(_LABEL.findall(m.group(2) or "")))
            out[f"{m.group(1)}{{{labels}}}"] = float(m.group(3))
    return out


def scrape(url: str, prefix: str = "", timeout: float = 10.0) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a local server's metrics URL
        return parse_prometheus(resp.read().decode(), prefix)
