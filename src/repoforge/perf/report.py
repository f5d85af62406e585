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

from .analyzer import PerfError, PerfOptions, PerfPoint, _strip_scheme, resolve_shapes

__all__ = [
    "FORMAT",
    "PLOTS",
    "MachineInfo",
    "PerfReport",
    "load_report",
    "machine_info",
    "render_markdown",
    "server_version",
    "write_report",
]

FORMAT = "repoforge-perf-report/1"
#: Plot files written next to report.json / report.md.
PLOTS = ("throughput.png", "latency.png", "server_breakdown.png")
_PROTO_LABEL = {"grpc": "gRPC", "http": "HTTP"}


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
        if protocol == "http":
            import tritonclient.http as client_http

            c = client_http.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
            try:
                return str(c.get_server_metadata().get("version")) or None
            finally:
                c.close()
        import tritonclient.grpc as client_grpc

        g = client_grpc.InferenceServerClient(url)
        try:
            return str(g.get_server_metadata(as_json=True, client_timeout=timeout).get("version")) or None
        finally:
            g.close()
    except Exception:  # noqa: BLE001 - best effort
        return None


def machine_info(url: str | None = None, protocol: str = "http") -> MachineInfo:
    """This host (CPU count, platform, CPU model) plus the server's version when ``url`` is given."""
    try:
        pa_version: str | None = importlib.metadata.version("tritonclient")
    except importlib.metadata.PackageNotFoundError:
        pa_version = None
    return MachineInfo(
        cpu_count=os.cpu_count() or 1,
        platform=platform.platform(),
        cpu_model=_cpu_model(),
        python=platform.python_version(),
        tritonserver_version=server_version(url, protocol) if url else None,
        perf_analyzer_version=pa_version,
    )


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
    def stability_note(self) -> str:
        s = self.settings
        interval, pct, trials = s.get("measurement_interval_ms"), s.get("stability_percentage"), s.get("max_trials") or 10
        text = (
            f"Each point is perf_analyzer's average over {interval} ms windows, repeated until 3 windows in a row agreed "
            f"within {pct:g} % on throughput and latency (at most {trials} windows; a point that never settled fails the run). "
            if interval is not None and pct is not None else ""
        )  # fmt: skip
        text += (
            f"The {self.machine.cpu_count} CPU cores of this host were shared by tritonserver and perf_analyzer (no pinning), "
            "so absolute numbers understate a dedicated server and vary between runs and machines."
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
    ) -> PerfReport:
        """A report for the runs of one model (one :class:`PerfOptions` per protocol). ``machine``
        defaults to :func:`machine_info` asking the first endpoint for the server version."""
        opts_list = [options] if isinstance(options, PerfOptions) else list(options)
        if not opts_list:
            raise ValueError("at least one PerfOptions is needed")
        first = opts_list[0]
        if machine is None:
            machine = machine_info(first.url, first.protocol) if first.service_kind == "triton" else machine_info()
        settings: dict[str, Any] = {
            "service_kind": first.service_kind,
            "batch_size": first.batch_size,
            "concurrency": list(first.concurrency),
            "request_rate": first.request_rate,
            "measurement_interval_ms": first.measurement_interval_ms,
            "stability_percentage": first.stability_percentage,
            "max_trials": first.max_trials,
            "input_data": str(first.input_data) if first.input_data is not None else "random",
            "shapes": resolve_shapes(first, config) if first.service_kind == "triton" else dict(first.shapes),
        }
        return cls(
            model=first.model,
            urls={o.protocol: o.url for o in opts_list},
            points=list(points),
            machine=machine,
            settings=settings,
            calibration_model=calibration_model,
            calibration_points=list(calibration_points),
        )


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


def _protocol_table(report: PerfReport, protocol: str) -> list[str]:
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
        cells = [f"{load:g}", _num(h and h.throughput, 1), _num(g and g.throughput, 1), ratio,
                 _num(h and h.p50_ms), _num(g and g.p50_ms), _num(h and h.p99_ms), _num(g and g.p99_ms)]  # fmt: skip
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


def render_markdown(report: PerfReport, plots: Sequence[str] = PLOTS) -> str:
    m, s = report.machine, report.settings
    shapes = ", ".join(f"{k}:{','.join(map(str, v))}" for k, v in (s.get("shapes") or {}).items()) or "from the model"
    out = [f"# Performance: `{report.model}`", ""]
    out.append(f"- **Endpoints:** {', '.join(f'{_PROTO_LABEL.get(k, k)} `{v}`' for k, v in report.urls.items())}")
    out.append(f"- **Measured:** {report.timestamp}")
    out.append(f"- **Server:** tritonserver {m.tritonserver_version or 'unknown'}; perf_analyzer {m.perf_analyzer_version or 'unknown'}")
    out.append(f"- **Machine:** {m.cpu_count} CPU cores ({m.cpu_model or 'unknown CPU'}), {m.platform}, Python {m.python}")
    out.append(
        f"- **Settings:** batch size {s.get('batch_size')}, input data {s.get('input_data')}, shapes {shapes}, "
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
    for proto in protos:
        out += [f"## {_PROTO_LABEL.get(proto, proto)}", "", "Latencies are client-side; server times are averages per request.", ""]
        out += _protocol_table(report, proto) + [""]
    if report.calibration_model and report.calibration_points:
        out += [f"## Relative to calibration model `{report.calibration_model}`", ""] + _calibration_table(report) + [""]
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
        import matplotlib  # noqa: F401
    except ImportError:
        raise PerfError('the perf report plots need matplotlib: pip install "matplotlib>=3.7" (or write_report(..., plots=False))') from None


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _plot_throughput(report: PerfReport, path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for proto in report.protocols:
        pts = report.points_for(proto)
        ax.plot([p.load for p in pts], [p.throughput for p in pts], marker="o", label=_PROTO_LABEL.get(proto, proto))
    ax.set_xlabel(_load_header(report))
    ax.set_ylabel("Throughput (infer/s)")
    ax.set_title(f"{report.model}: throughput")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def _plot_latency(report: PerfReport, path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    styles = {"p50_ms": "-", "p90_ms": "--", "p99_ms": ":"}
    colors = {proto: f"C{i}" for i, proto in enumerate(report.protocols)}
    for proto in report.protocols:
        pts = sorted(report.points_for(proto), key=lambda p: p.throughput)
        for attr, style in styles.items():
            ax.plot([p.throughput for p in pts], [getattr(p, attr) for p in pts], linestyle=style, marker="o",
                    markersize=3, color=colors[proto], label=f"{_PROTO_LABEL.get(proto, proto)} {attr[:3]}")  # fmt: skip
    ax.set_xlabel("Throughput (infer/s)")
    ax.set_ylabel("Latency (ms)")
    ax.set_title(f"{report.model}: latency vs throughput")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def _plot_breakdown(report: PerfReport, path: Path) -> None:
    protos = report.protocols or ["grpc"]
    fig = _figure(width=max(7.0, 4.0 * len(protos)))
    parts = [("server_queue_us", "queue"), ("server_compute_input_us", "compute input"),
             ("server_compute_infer_us", "compute infer"), ("server_compute_output_us", "compute output")]  # fmt: skip
    axes = fig.subplots(1, len(protos), sharey=True, squeeze=False)[0]
    for ax, proto in zip(axes, protos):
        pts = report.points_for(proto)
        xs = list(range(len(pts)))
        bottom = [0.0] * len(pts)
        for attr, label in parts:
            vals = [getattr(p, attr) for p in pts]
            ax.bar(xs, vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(xs, [f"{p.load:g}" for p in pts])
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
def write_report(report: PerfReport, out_dir: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNGs to ``out_dir``; return their paths.

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
    names = ["report.json", "report.md", *(PLOTS if plots else ())]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report, PLOTS if plots else ()))
        if plots:
            _plot_throughput(report, tmp / "throughput.png")
            _plot_latency(report, tmp / "latency.png")
            _plot_breakdown(report, tmp / "server_breakdown.png")
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

