"""Reading tritonserver's log: which models failed and why, and a tail without a CPU host's harmless CUDA/NVML
noise or the big informational tables."""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# Log parsing
# --------------------------------------------------------------------------------------------
# Lines that tritonserver prints on a CPU-only host although nothing is wrong.
_HARMLESS = re.compile(
    r"CudaDriverHelper has not been initialized"
    r"|Unable to allocate pinned system memory"
    r"|CUDA driver version is insufficient"
    r"|Failed to initialize NVML"
    r"|DCGM unable to start"
    r"|Unable to get device count"
    r"|no CUDA-capable device"
    r"|GPU metrics"
    r"|cudaGetDeviceCount",
    re.IGNORECASE,
)
_FAILED_RE = re.compile(r"failed to (?:load|poll model) '(?P<name>[^']+)'(?: version \d+)?:?\s*(?P<reason>.*)")
_ERROR_LINE = re.compile(r"^E\d{4} ")


def harmless_log_line(line: str) -> bool:
    """True for the CUDA/NVML/DCGM complaints of a CPU-only host, which are not failures."""
    return bool(_HARMLESS.search(line))


def _clean_reason(text: str) -> str:
    text = text.strip().rstrip('"').replace("\\n", " ").replace("\\'", "'")
    return re.sub(r"\s+", " ", text).strip()


def parse_failed_models(log: str) -> dict[str, str]:
    """Models that failed to load, ``{name: reason}``, from "failed to load 'x'" lines and the status table."""
    failed: dict[str, str] = {}
    for line in log.splitlines():
        m = _FAILED_RE.search(line)
        if m and not harmless_log_line(line):
            name, reason = m.group("name"), _clean_reason(m.group("reason"))
            if not failed.get(name):  # keep the first non-empty reason
                failed[name] = reason
    # The model status table: | Model | Version | Status |; continuation rows have an empty name.
    in_table = False
    current: str | None = None
    for line in log.splitlines():
        stripped = line.strip()
        if re.match(r"^\|\s*Model\s*\|\s*Version\s*\|\s*Status\s*\|", stripped):
            in_table, current = True, None
            continue
        if not in_table:
            continue
        if stripped.startswith("+"):
            continue
        if not stripped.startswith("|"):
            in_table, current = False, None
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|", 2)]
        if len(cells) != 3:
            continue
        name, _version, status = cells
        if name:
            current = None
            if status and not status.startswith("READY"):
                reason = _clean_reason(re.sub(r"^UNAVAILABLE:\s*", "", status))
                if not failed.get(name):  # prefer the (complete) "failed to load" line
                    failed[name] = reason
                    current = name
        elif current is not None and status:
            failed[current] = f"{failed[current]} {status}".strip()
    return failed


def address_in_use(log: str) -> bool:
    return bool(re.search(r"address already in use|failed to start .*service|Socket '.*' already in use", log, re.I))


_INFO_TABLE = re.compile(r"^\|\s*(Option|Backend|Repository Agent)\s*\|")


def useful_tail(log: str, n: int) -> str:
    """The last ``n`` log lines without CPU-only CUDA/NVML noise and the big informational tables
    (options, backends, repository agents), which would otherwise fill the whole tail. The model
    status table is kept."""
    kept: list[str] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("+-") and i + 1 < len(lines) and _INFO_TABLE.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and (lines[j].startswith("|") or lines[j].startswith("+")):
                j += 1
            kept.append(f"[{j - i} lines of the {lines[i + 1].strip('| ').split()[0].lower()} table left out]")
            i = j
            continue
        if not harmless_log_line(line):
            kept.append(line)
        i += 1
    return "\n".join(kept[-n:])


def error_lines(log: str) -> list[str]:
    """The log's error lines (E0000 ...) that are not CPU-host noise."""
    return [ln for ln in log.splitlines() if _ERROR_LINE.match(ln) and not harmless_log_line(ln)]
