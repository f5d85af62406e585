"""A perf run's report: ``report.json``, ``report.md`` and PNG plots, written atomically.

The directory is built in a temporary sibling and renamed into place, so a reader (or a CI artifact
upload) never sees a half-written report, and a failed run leaves the previous report untouched.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from repoforge import lazy
from repoforge.triton.client import server_metadata

from .analyzer import SERVICE_KINDS, PerfError, PerfOptions, PerfPoint, _strip_scheme, resolve_shapes

__all__ = [
    "FORMAT",
    "PLOTS",
    "MachineInfo",
    "PerfReport",
    "batch_delay_note",
    "batching_of",
    "host_load",
    "latency_figure",
    "load_report",
    "machine_info",
    "plot_names",
    "render_markdown",
    "server_version",
    "throughput_figure",
    "write_report",
]

FORMAT = "repoforge-perf-report/1"
#: Plot files written next to report.json / report.md.
PLOTS = ("throughput.png", "latency.png", "server_breakdown.png")
_PROTO_LABEL = {"grpc": "gRPC", "http": "HTTP", "sse": "SSE", "ws": "WebSocket", "async": "async"}


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------
@dataclass
class MachineInfo:
    cpu_count: int
    platform: str
    cpu_model: str = ""
    python: str = ""
    tritonserver_version: str | None = None
    perf_analyzer_version: str | None = None
    #: The server measured: "tritonserver" or "TorchServe" (its version in ``torchserve_version``).
    server: str = "tritonserver"
    torchserve_version: str | None = None
    #: :func:`host_load` just before the first point and after the last: a busy host explains slow numbers.
    host_start: dict[str, Any] | None = None
    host_end: dict[str, Any] | None = None

    @property
    def server_label(self) -> str:
        version = self.torchserve_version if self.server == "TorchServe" else self.tritonserver_version
        return f"{self.server} {version or 'unknown'}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineInfo:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def server_version(url: str, protocol: str = "http", timeout: float = 5.0) -> str | None:
    """The server's version from its metadata (``GET /v2`` or gRPC ServerMetadata); None if unreachable."""
    url = _strip_scheme(url)
    try:
        return str(server_metadata(protocol, url, timeout).get("version")) or None
    except Exception:  # noqa: BLE001 - best effort
        return None


def host_load() -> dict[str, Any]:
    """CPU count and 1/5/15-minute load average now (load is None where the OS has none)."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count() or 1, "load_avg": load}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(url: str | None = None, protocol: str = "http", service_kind: str = "triton") -> MachineInfo:
    """This host (CPU count, platform, CPU model, load now as ``host_end``) plus the server's version:
    Triton's from its metadata when ``url`` is given, TorchServe's from the installed package that ran it."""
    kind = SERVICE_KINDS[service_kind]
    return MachineInfo(
        cpu_count=os.cpu_count() or 1,
        platform=platform.platform(),
        cpu_model=_cpu_model(),
        python=platform.python_version(),
        tritonserver_version=server_version(url, protocol) if url and kind.package is None else None,
        perf_analyzer_version=_version("tritonclient"),
        server=kind.server,
        torchserve_version=_version(kind.package) if kind.package else None,
        host_end=host_load(),
    )


def batching_of(config: mc.ModelConfig | None) -> dict[str, Any] | None:
    """A Triton config's dynamic batching as the report explains it: the queue delay (ms), the batch
    size that dispatches at once (the smallest preferred size, else max_batch_size), and where it came
    from; None without batching or without a delay."""
    if config is None or config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
        return None
    db = config.dynamic_batching
    if db.max_queue_delay_microseconds <= 0:
        return None
    fill = min(db.preferred_batch_size) if db.preferred_batch_size else config.max_batch_size
    return {
        "delay_ms": db.max_queue_delay_microseconds / 1000.0,
        "full_batch": int(fill),
        "source": f"max_queue_delay_microseconds {db.max_queue_delay_microseconds} in config.pbtxt",
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
@dataclass
class PerfReport:
    """Everything one ``repoforge perf`` run measured for one model (one or both protocols)."""

    model: str
    #: ``{protocol: host:port}`` of the endpoints measured.
    urls: dict[str, str]
    points: list[PerfPoint]
    machine: MachineInfo
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    #: batch_size, measurement_interval_ms, stability_percentage, max_trials, shapes, input_data, ...
    settings: dict[str, Any] = field(default_factory=dict)
    #: Relative mode: a reference model measured in the same run with the same settings.
    calibration_model: str | None = None
    calibration_points: list[PerfPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def protocols(self) -> list[str]:
        return list(dict.fromkeys(p.protocol for p in self.points))

    @property
    def url(self) -> str:
        return ", ".join(f"{proto} {u}" for proto, u in self.urls.items())

    def points_for(self, protocol: str) -> list[PerfPoint]:
        return sorted((p for p in self.points if p.protocol == protocol), key=lambda p: p.load)

    def calibration_for(self, protocol: str, load: float) -> PerfPoint | None:
        return next((c for c in self.calibration_points if c.protocol == protocol and c.load == load), None)

    @property
    def service_kind(self) -> str:
        return str(self.settings.get("service_kind") or "triton")

    @property
    def has_server_times(self) -> bool:
        """Whether any point has server-side times (Triton: from perf_analyzer; TorchServe: its metrics API)."""
        return any(p.server_us > 0 or p.server_latency_us for p in self.points)

    @property
    def protocol_mode(self) -> bool:
        """Measured by `perf --protocol sse|ws|async|all` (repoforge's asyncio client), not by perf_analyzer."""
        return self.settings.get("mode") == "protocols"

    @property
    def stability_note(self) -> str:
        s = self.settings
        if self.protocol_mode:
            return (
                f"Each point is a closed loop of N clients for {s.get('duration_s')} s after a {s.get('warmup_s')} s "
                "warm-up, all protocols measured by one asyncio client process, in an order rotated per concurrency "
                f"level. The {self.machine.cpu_count} CPU cores of this host were shared by the client, tritonserver, "
                "the gateway and redis-server (no pinning): compare protocols within this report, not across machines."
            )
        interval, pct, trials = (
            s.get("measurement_interval_ms"),
            s.get("stability_percentage"),
            s.get("max_trials") or 10,
        )
        text = (
            f"Each point is perf_analyzer's average over {interval} ms windows, repeated until 3 windows in a row agreed "
            f"within {pct:g} % on throughput and latency (at most {trials} windows; a point that never settled fails the run). "
            if interval is not None and pct is not None else ""
        )  # fmt: skip
        text += (
            f"The {self.machine.cpu_count} CPU cores of this host were shared by {self.machine.server} and perf_analyzer "
            "(no pinning), so absolute numbers understate a dedicated server and vary between runs and machines."
        )
        if self.calibration_model:
            text += (
                f" Calibration model `{self.calibration_model}` was measured point by point in the same run; the regression "
                "gate compares throughput and p99 as ratios to it, which cancels most machine-to-machine speed differences."
            )
        else:
            text += " For a CI gate on shared machines, measure a calibration model in the same run (relative mode)."
        return text

    def cache_warning(self) -> str | None:
        hits = [p for p in self.points if p.cache_hit_us]
        if not hits:
            return None
        return (
            "The server answered from its response cache (the CSV has cache-hit times): perf_analyzer sends the same "
            "input every request, so these numbers measure the cache, not the model. Measure without `response_cache` "
            "(`response_cache: false` in the spec, or measure a repository folder, which repoforge serves with the cache off) for compute numbers."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "urls": dict(self.urls),
            "protocols": self.protocols,
            "timestamp": self.timestamp,
            "machine": asdict(self.machine),
            "settings": self.settings,
            "stability": self.stability_note,
            "calibration_model": self.calibration_model,
            "points": [p.to_dict() for p in self.points],
            "calibration_points": [p.to_dict() for p in self.calibration_points],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerfReport:
        if data.get("format") != FORMAT:
            raise PerfError(f"not a repoforge perf report (format {data.get('format')!r}, expected {FORMAT})")
        return cls(
            model=data["model"],
            urls=dict(data.get("urls", {})),
            points=[PerfPoint.from_dict(p) for p in data.get("points", [])],
            machine=MachineInfo.from_dict(data.get("machine", {"cpu_count": 0, "platform": ""})),
            timestamp=data.get("timestamp", ""),
            settings=dict(data.get("settings", {})),
            calibration_model=data.get("calibration_model"),
            calibration_points=[PerfPoint.from_dict(p) for p in data.get("calibration_points", [])],
            notes=list(data.get("notes", [])),
        )

    @classmethod
    def from_runs(
        cls,
        options: PerfOptions | Sequence[PerfOptions],
        points: Sequence[PerfPoint],
        config: mc.ModelConfig | None = None,
        *,
        machine: MachineInfo | None = None,
        calibration_model: str | None = None,
        calibration_points: Sequence[PerfPoint] = (),
        host_start: dict[str, Any] | None = None,
        batching: dict[str, Any] | None = None,
    ) -> PerfReport:
        """A report for the runs of one model (one :class:`PerfOptions` per protocol). ``machine``
        defaults to :func:`machine_info` asking the first endpoint for the server version.
        ``host_start`` is :func:`host_load` taken before the first point; ``batching`` (default: from the
        Triton ``config``, see :func:`batching_of`) lets the report explain a latency floor set by the batch delay."""
        opts_list = [options] if isinstance(options, PerfOptions) else list(options)
        if not opts_list:
            raise ValueError("at least one PerfOptions is needed")
        first = opts_list[0]
        if machine is None:
            machine = machine_info(first.url, first.protocol, first.service_kind)
        if host_start is not None:
            machine.host_start = host_start
        settings: dict[str, Any] = {
            "service_kind": first.service_kind,
            "batch_size": first.batch_size,
            "concurrency": list(first.concurrency),
            "request_rate": first.request_rate,
            "measurement_interval_ms": first.measurement_interval_ms,
            "stability_percentage": first.stability_percentage,
            "max_trials": first.max_trials,
            "input_data": str(first.input_data) if first.input_data is not None else "random",
            "shapes": resolve_shapes(first, config)
            if SERVICE_KINDS[first.service_kind].config_shapes
            else dict(first.shapes),
        }
        batching = batching if batching is not None else batching_of(config)
        if batching:
            settings["batching"] = batching
        note = batch_delay_note(points, batching) if batching else None
        return cls(
            model=first.model,
            urls={o.protocol: o.url for o in opts_list},
            points=list(points),
            machine=machine,
            settings=settings,
            calibration_model=calibration_model,
            calibration_points=list(calibration_points),
            notes=[note] if note else [],
        )


def batch_delay_note(points: Sequence[PerfPoint], batching: dict[str, Any]) -> str | None:
    """Why latency sits at the configured batch delay, when it does.

    With fewer rows in flight (concurrency x batch size) than a batch that dispatches at once
    (``batching["full_batch"]``), the batcher waits the whole delay for rows that never come, so the median
    latency is the delay plus the model's time and throughput is about concurrency / delay. Said for the
    points where that shows: the server's queue time is most of the delay (where it is measured), else
    p50 lies between 0.8 and 2 delays. None when no point shows it.
    """
    delay_ms, full = float(batching.get("delay_ms") or 0), int(batching.get("full_batch") or 0)
    if delay_ms <= 0 or full <= 1:
        return None

    def floored(p: PerfPoint) -> bool:
        if p.request_rate is not None or p.concurrency * p.batch_size >= full:
            return False
        if p.server_queue_us > 0:
            return p.server_queue_us / 1000.0 >= 0.7 * delay_ms
        return 0.8 * delay_ms <= p.p50_ms <= 2 * delay_ms

    hit = sorted((p for p in points if floored(p)), key=lambda p: p.concurrency)
    if not hit:
        return None
    loads = sorted({p.concurrency for p in hit})
    where = f"concurrency {loads[0]}" if len(loads) == 1 else f"concurrency {loads[0]}–{loads[-1]}"
    p50 = [p.p50_ms for p in hit]
    queue = [p.server_queue_us / 1000.0 for p in hit if p.server_queue_us > 0]
    fills = sorted({p.concurrency for p in points if p.request_rate is None and p.concurrency * p.batch_size >= full})

    def span(values: list[float]) -> str:
        lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
        return lo if lo == hi else f"{lo}–{hi}"

    text = (
        f"Latency floor = the batch delay: at {where} fewer requests are in flight than a full batch ({full}), so every "
        f"batch waits the whole configured delay ({batching.get('source', f'{delay_ms:g} ms')}) for rows that never come: "
        f"p50 {span(p50)} ms against a {delay_ms:g} ms delay"
        + (f", {span(queue)} ms of it queued in the server" if queue else "")
        + ". Throughput there is about concurrency ÷ delay, not the model's speed."
    )
    if fills:
        text += f" From concurrency {fills[0]} a batch fills and runs at once."
    return text + " For lower latency at low load, lower `dynamic_batching.max_queue_delay_us` in the spec."


def load_report(path: str | os.PathLike[str]) -> PerfReport:
    """Read ``report.json`` (or a report directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise PerfError(f"cannot read perf report {p}: {exc}") from None
    return PerfReport.from_dict(data)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def _load_header(report: PerfReport) -> str:
    return "Request rate (/s)" if any(p.request_rate is not None for p in report.points) else "Concurrency"


def _torchserve_table(report: PerfReport, protocol: str) -> list[str]:
    """TorchServe: what it gives. perf_analyzer measures no server times there; the queue and total per
    request come from TorchServe's metrics API, when it answered."""
    head = [_load_header(report), "Throughput (infer/s)", "p50 (ms)", "p90 (ms)", "p95 (ms)", "p99 (ms)"]
    server = report.has_server_times
    if server:
        head += ["Server queue (µs)", "Server total (µs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in report.points_for(protocol):
        cells = [f"{p.load:g}", _num(p.throughput, 1), _num(p.p50_ms), _num(p.p90_ms), _num(p.p95_ms), _num(p.p99_ms)]
        if server:
            cells += [
                _num(p.server_queue_us if p.server_latency_us is not None else None, 0),
                _num(p.server_latency_us, 0),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _protocol_table(report: PerfReport, protocol: str) -> list[str]:
    if not SERVICE_KINDS[report.service_kind].stats_server_times:
        return _torchserve_table(report, protocol)
    head = [_load_header(report), "Throughput (infer/s)", "p50 (ms)", "p90 (ms)", "p95 (ms)", "p99 (ms)",
            "Queue (µs)", "Compute input (µs)", "Compute infer (µs)", "Compute output (µs)",
            "Client send (µs)", "Network+server (µs)", "Client recv (µs)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in report.points_for(protocol):
        cells = [f"{p.load:g}", _num(p.throughput, 1), _num(p.p50_ms), _num(p.p90_ms), _num(p.p95_ms), _num(p.p99_ms),
                 _num(p.server_queue_us, 0), _num(p.server_compute_input_us, 0), _num(p.server_compute_infer_us, 0),
                 _num(p.server_compute_output_us, 0), _num(p.client_send_us, 0), _num(p.network_us, 0),
                 _num(p.client_recv_us, 0)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _side_by_side(report: PerfReport) -> list[str]:
    http = {p.load: p for p in report.points_for("http")}
    grpc = {p.load: p for p in report.points_for("grpc")}
    head = [_load_header(report), "HTTP infer/s", "gRPC infer/s", "gRPC / HTTP", "HTTP p50 (ms)", "gRPC p50 (ms)",
            "HTTP p99 (ms)", "gRPC p99 (ms)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for load in sorted(set(http) | set(grpc)):
        h, g = http.get(load), grpc.get(load)
        ratio = f"{g.throughput / h.throughput:.2f}×" if h and g and h.throughput else "–"
        cells = [f"{load:g}", _num(h.throughput if h else None, 1), _num(g.throughput if g else None, 1), ratio,
                 _num(h.p50_ms if h else None), _num(g.p50_ms if g else None),
                 _num(h.p99_ms if h else None), _num(g.p99_ms if g else None)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _calibration_table(report: PerfReport) -> list[str]:
    head = ["Protocol", _load_header(report), f"{report.calibration_model} infer/s", f"{report.model} infer/s",
            "Throughput ratio", "p99 ratio"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for proto in report.protocols:
        for p in report.points_for(proto):
            c = report.calibration_for(proto, p.load)
            if c is None:
                continue
            tr = p.throughput / c.throughput if c.throughput else None
            pr = p.p99_ms / c.p99_ms if c.p99_ms else None
            lines.append(f"| {_PROTO_LABEL.get(proto, proto)} | {p.load:g} | {_num(c.throughput, 1)} | {_num(p.throughput, 1)} "
                         f"| {_num(tr, 3)} | {_num(pr, 3)} |")  # fmt: skip
    return lines


def _host(h: dict[str, Any] | None) -> str:
    if not h:
        return "not recorded"
    load = h.get("load_avg")
    return (
        f"load {', '.join(f'{x:.2f}' for x in load)}" if load else "load unknown"
    ) + f" on {h.get('cpu_count')} CPUs"


def plot_names(report: PerfReport) -> tuple[str, ...]:
    """The plots a report gets: no server breakdown for a TorchServe run whose metrics API gave no times."""
    empty = not SERVICE_KINDS[report.service_kind].stats_server_times and not report.has_server_times
    empty = empty or report.protocol_mode
    return tuple(p for p in PLOTS if p != "server_breakdown.png" or not empty)


_PROTOCOL_ABOUT = {
    "http": "REST: Triton's HTTP `/infer`, KServe v2 JSON",
    "grpc": "gRPC: Triton's gRPC (a stream per request for a decoupled model)",
    "sse": "SSE: the gateway's `generate_stream`",
    "ws": "WebSocket: the gateway's `/stream`, one connection per client kept open",
    "async": "async: the gateway's `/async` through the Redis queue; first response = the 202, end to end = the "
    "result's callback",
}


def _protocols_table(report: PerfReport) -> list[str]:
    head = ["Concurrency", "Protocol", "Throughput (req/s)", "First response p50 (ms)", "First response p99 (ms)",
            "Event gap p50 (ms)", "Event gap p99 (ms)", "Events / request", "End to end p50 (ms)",
            "End to end p99 (ms)", "Errors"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {p: i for i, p in enumerate(("http", "grpc", "sse", "ws", "async"))}
    for p in sorted(report.points, key=lambda p: (p.load, order.get(p.protocol, 9))):
        cells = [f"{p.load:g}", _PROTO_LABEL.get(p.protocol, p.protocol), _num(p.throughput, 1),
                 _num(p.first_response_p50_ms), _num(p.first_response_p99_ms), _num(p.event_gap_p50_ms),
                 _num(p.event_gap_p99_ms), _num(p.events_per_request), _num(p.p50_ms), _num(p.p99_ms),
                 f"{p.errors}" + (f" of {p.requests}" if p.requests is not None else "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _render_protocols(report: PerfReport, plots: Sequence[str]) -> str:
    m, s = report.machine, report.settings
    out = [f"# Protocols compared: `{report.model}`", ""]
    out += [f"- **{_PROTO_LABEL.get(k, k)}** `{v}`: {_PROTOCOL_ABOUT.get(k, k)}" for k, v in report.urls.items()]
    out.append(f"- **Measured:** {report.timestamp}")
    out.append(f"- **Server:** {m.server_label}")
    out.append(
        f"- **Machine:** {m.cpu_count} CPU cores ({m.cpu_model or 'unknown CPU'}), {m.platform}, Python {m.python}"
    )
    out.append(f"- **Host (1/5/15-min load average):** at start {_host(m.host_start)}; at end {_host(m.host_end)}")
    out.append(f"- **Settings:** input {s.get('input_data')}, {s.get('duration_s')} s per point, timeout "
               f"{s.get('timeout_s')} s" + (f", {s['async_workers']} in-process queue worker slots, Redis "
               f"{s.get('redis')}" if s.get("async_workers") else ""))  # fmt: skip
    out += ["", "## How it was measured", "", report.stability_note, ""]
    for note in report.notes:
        out += [f"> {note}", ""]
    out += ["## Side by side", "", "Latencies are client-side. A gap is the time between two events of one stream "
            "(none for a model that answers once).", ""] + _protocols_table(report) + [""]  # fmt: skip
    if plots:
        titles = {"throughput.png": "Throughput vs concurrency", "latency.png": "Latency vs throughput"}
        out += ["## Plots", ""] + [f"![{titles.get(p, p)}]({p})" for p in plots] + [""]
    return "\n".join(out)


def render_markdown(report: PerfReport, plots: Sequence[str] = PLOTS) -> str:
    if report.protocol_mode:
        return _render_protocols(report, plots)
    m, s = report.machine, report.settings
    shapes = ", ".join(f"{k}:{','.join(map(str, v))}" for k, v in (s.get("shapes") or {}).items()) or "from the model"
    out = [f"# Performance: `{report.model}`", ""]
    out.append(f"- **Endpoints:** {', '.join(f'{_PROTO_LABEL.get(k, k)} `{v}`' for k, v in report.urls.items())}")
    out.append(f"- **Measured:** {report.timestamp}")
    out.append(f"- **Server:** {m.server_label}; perf_analyzer {m.perf_analyzer_version or 'unknown'}")
    out.append(
        f"- **Machine:** {m.cpu_count} CPU cores ({m.cpu_model or 'unknown CPU'}), {m.platform}, Python {m.python}"
    )
    out.append(f"- **Host (1/5/15-min load average):** at start {_host(m.host_start)}; at end {_host(m.host_end)}")
    data = s.get("input_data")
    if s.get("request_file"):
        data = f"{data} (kept beside this report, with the request body {s['request_file']})"
    out.append(
        f"- **Settings:** batch size {s.get('batch_size')}, input data {data}, shapes {shapes}, "
        f"window {s.get('measurement_interval_ms')} ms, stability {s.get('stability_percentage')} %, "
        f"max trials {s.get('max_trials') or 10}"
    )
    out += ["", "## Stability", "", report.stability_note, ""]
    warning = report.cache_warning()
    if warning:
        out += [f"> **Warning:** {warning}", ""]
    for note in report.notes:
        out += [f"> {note}", ""]
    protos = report.protocols
    if "http" in protos and "grpc" in protos:
        out += ["## HTTP vs gRPC", ""] + _side_by_side(report) + [""]
    if not SERVICE_KINDS[report.service_kind].stats_server_times:
        about = "Latencies are client-side. perf_analyzer measures no server-side times for TorchServe; " + (
            "the server queue and total (queue included) per request are TorchServe's ts_queue_latency_microseconds "
            "and ts_inference_latency_microseconds from its metrics API, averaged over each point's perf_analyzer run."
            if report.has_server_times
            else "TorchServe's metrics API gave none either, so none are shown."
        )
    else:
        about = "Latencies are client-side; server times are averages per request."
    for proto in protos:
        out += [f"## {_PROTO_LABEL.get(proto, proto)}", "", about, ""]
        out += _protocol_table(report, proto) + [""]
    if report.calibration_model and report.calibration_points:
        out += (
            [f"## Relative to calibration model `{report.calibration_model}`", ""] + _calibration_table(report) + [""]
        )
    if plots:
        titles = {"throughput.png": "Throughput vs concurrency", "latency.png": "Latency vs throughput",
                  "server_breakdown.png": "Server-side time per request"}  # fmt: skip
        out += ["## Plots", ""] + [f"![{titles.get(p, p)}]({p})" for p in plots] + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no pyplot global state, no display needed)
# --------------------------------------------------------------------------------------------
def _require_matplotlib() -> None:
    try:
        lazy.matplotlib_figure()
    except ImportError:
        raise PerfError(
            'the perf report plots need matplotlib: pip install "matplotlib>=3.7" (or write_report(..., plots=False))'
        ) from None


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    Figure, FigureCanvasAgg = lazy.matplotlib_figure()

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _load_label(report: PerfReport, p: PerfPoint) -> str:
    return f"{p.request_rate:g}/s" if p.request_rate is not None else f"c={p.concurrency}"


def _label_points(
    ax: Any,
    report: PerfReport,
    pts: Sequence[PerfPoint],
    xs: Sequence[float],
    ys: Sequence[float],
    color: str | None = None,
) -> None:
    """Write each point's concurrency (or request rate) next to it."""
    for p, x, y in zip(pts, xs, ys, strict=True):
        ax.annotate(_load_label(report, p), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)


def throughput_figure(report: PerfReport) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    for proto in report.protocols:
        pts = report.points_for(proto)
        xs, ys = [p.load for p in pts], [p.throughput for p in pts]
        ax.plot(xs, ys, marker="o", label=_PROTO_LABEL.get(proto, proto))
        _label_points(ax, report, pts, xs, ys)
    ax.set_xlabel(_load_header(report))
    ax.set_ylabel("Throughput (infer/s)")
    ax.set_title(f"{report.model}: throughput")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _plot_throughput(report: PerfReport, path: Path) -> None:
    throughput_figure(report).savefig(path)


def latency_figure(report: PerfReport) -> Any:
    """Latency percentiles against throughput, as points (one marker per percentile), each labelled
    with its concurrency: where throughput drops at a higher load no line doubles back, and the
    labels say in which order the loads came."""
    fig = _figure()
    ax = fig.add_subplot()
    markers = {"p50_ms": "o", "p90_ms": "s", "p99_ms": "^"}
    colors = {proto: f"C{i}" for i, proto in enumerate(report.protocols)}
    for proto in report.protocols:
        pts = report.points_for(proto)  # in load order
        xs = [p.throughput for p in pts]
        for attr, marker in markers.items():
            ys = [getattr(p, attr) for p in pts]
            ax.plot(xs, ys, linestyle="none", marker=marker, markersize=5, color=colors[proto],
                    label=f"{_PROTO_LABEL.get(proto, proto)} {attr[:3]}")  # fmt: skip
            if attr != "p90_ms":
                _label_points(ax, report, pts, xs, ys, colors[proto])
    ax.set_xlabel("Throughput (infer/s)")
    ax.set_ylabel("Latency (ms)")
    ax.set_title(f"{report.model}: latency vs throughput")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _plot_latency(report: PerfReport, path: Path) -> None:
    latency_figure(report).savefig(path)


def _breakdown_parts(report: PerfReport) -> list[tuple[Any, str]]:
    """(value of a point, label) per stacked bar part: Triton's four server times, or TorchServe's
    queue and the rest of its per-request latency."""
    if not SERVICE_KINDS[report.service_kind].stats_server_times:
        return [
            (lambda p: p.server_queue_us, "queue"),
            (
                lambda p: max(0.0, (p.server_latency_us or 0.0) - p.server_queue_us),
                "after the queue (handler, frontend)",
            ),
        ]
    return [(lambda p, a=attr: getattr(p, a), label) for attr, label in (
        ("server_queue_us", "queue"), ("server_compute_input_us", "compute input"),
        ("server_compute_infer_us", "compute infer"), ("server_compute_output_us", "compute output"))]  # fmt: skip


def _plot_breakdown(report: PerfReport, path: Path) -> None:
    protos = report.protocols or ["grpc"]
    fig = _figure(width=max(7.0, 4.0 * len(protos)))
    parts = _breakdown_parts(report)
    axes = fig.subplots(1, len(protos), sharey=True, squeeze=False)[0]
    for ax, proto in zip(axes, protos, strict=True):
        pts = report.points_for(proto)
        xs = list(range(len(pts)))
        bottom = [0.0] * len(pts)
        for value, label in parts:
            vals = [value(p) for p in pts]
            ax.bar(xs, vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xticks(xs, [_load_label(report, p) for p in pts])
        ax.set_xlabel(_load_header(report))
        ax.set_title(_PROTO_LABEL.get(proto, proto))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("Server time per request (µs)")
    axes[-1].legend(fontsize="small")
    fig.suptitle(f"{report.model}: server-side breakdown")
    fig.tight_layout()
    fig.savefig(path)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_report(
    report: PerfReport,
    out_dir: str | os.PathLike[str],
    *,
    plots: bool = True,
    extra_files: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``report.json``, ``report.md``, (with ``plots``) the PNGs and ``extra_files`` (name → text,
    e.g. the request a TorchServe run sent) to ``out_dir``; return their paths.

    Atomic: everything is written to a temporary sibling directory that then replaces ``out_dir``.
    An existing ``out_dir`` is replaced only if it is empty or an earlier perf report (has ``report.json``).
    """
    if not report.points:
        raise PerfError("nothing to report: no perf points were measured")
    out = Path(out_dir).absolute()
    if out.exists():
        if not out.is_dir():
            raise PerfError(f"{out} exists and is not a directory; choose another report directory")
        if any(out.iterdir()) and not (out / "report.json").is_file():
            raise PerfError(f"{out} is not empty and holds no perf report; choose another report directory")
    if plots:
        _require_matplotlib()
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = plot_names(report) if plots else ()
    extra = dict(extra_files or {})
    names = ["report.json", "report.md", *pngs, *extra]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report, pngs))
        for name, text in extra.items():
            (tmp / name).write_text(text)
        drawers = {
            "throughput.png": _plot_throughput,
            "latency.png": _plot_latency,
            "server_breakdown.png": _plot_breakdown,
        }
        for name in pngs:
            drawers[name](report, tmp / name)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "report")
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old / "report", out)  # put the previous report back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]
