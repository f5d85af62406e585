"""Run NVIDIA perf_analyzer (from tritonclient 2.51) against a served model and parse its CSV.

perf_analyzer is run once per concurrency (so progress can be shown between points), always with
``-f <csv>``; only the CSV is parsed, never the console text. Shapes for variable (-1) dims come from
the model config, so users never write ``--shape`` by hand. Failures become one-line
:class:`PerfError` messages that say what to do, ending with perf_analyzer's own last error line.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import io
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import Target
from repoforge.errors import RepoforgeError
from repoforge.metrics import scrape, torchserve_per_request
from repoforge.output import publish_cache_dir
from repoforge.servers.triton import cache_root
from repoforge.triton.client import model_names
from repoforge.triton.inputs import random_array, triton_dtype

__all__ = [
    "INSTALL_HINT",
    "PerfAnalyzerNotFoundError",
    "PerfError",
    "PerfOptions",
    "PerfPoint",
    "build_command",
    "commands",
    "default_stability_percentage",
    "find_perf_analyzer",
    "list_models",
    "parse_concurrency",
    "parse_csv",
    "perf_env",
    "resolve_shapes",
    "run",
    "run_calibrated",
]

INSTALL_HINT = 'pip install "tritonclient[all]==2.51.0" (or pip install "repoforge[triton]")'
#: Size used for a variable (-1) dim when the user gives no shape.
DEFAULT_DIM = 16
Protocol = Literal["grpc", "http"]
ServiceKind = Target  # perf_analyzer --service-kind
Progress = Callable[[str], None]


class PerfError(RepoforgeError):
    """A perf run failed; the message is one line that says what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


class PerfAnalyzerNotFoundError(PerfError):
    """perf_analyzer is not installed (or cannot load its libraries)."""


# --------------------------------------------------------------------------------------------
# Locating perf_analyzer and its libraries
# --------------------------------------------------------------------------------------------
def _default_candidates() -> list[Path]:
    """Where perf_analyzer is looked for: next to the running Python (the venv's bin/, where the
    tritonclient wheel puts it), then PATH."""
    found = [Path(sys.executable).parent / "perf_analyzer"]  # not resolved: the venv's bin, not the base Python's
    on_path = shutil.which("perf_analyzer")
    if on_path:
        found.append(Path(on_path))
    return found


def find_perf_analyzer(binary: str | os.PathLike[str] | None = None) -> Path:
    """The perf_analyzer executable: ``binary``, ``$REPOFORGE_PERF_ANALYZER``, the venv's, or PATH's.

    Raises :class:`PerfAnalyzerNotFoundError` with the install command if there is none.
    """
    explicit = binary if binary is not None else os.environ.get("REPOFORGE_PERF_ANALYZER") or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise PerfAnalyzerNotFoundError(f"perf_analyzer not found or not executable at {path}; {INSTALL_HINT}")
    for path in _default_candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise PerfAnalyzerNotFoundError(
        f"perf_analyzer not found (looked next to {sys.executable} and on PATH); install it with {INSTALL_HINT}"
    )


def _site_dirs() -> list[Path]:
    dirs: list[str] = []
    paths = sysconfig.get_paths()
    dirs += [paths.get("purelib", ""), paths.get("platlib", "")]
    with contextlib.suppress(AttributeError):
        dirs += site.getsitepackages()
    for pkg in ("pytriton", "tritonclient"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.append(str(Path(next(iter(spec.submodule_search_locations))).parent))
    return [Path(d) for d in dict.fromkeys(d for d in dirs if d) if Path(d).is_dir()]


@functools.lru_cache(maxsize=1)
def _ldconfig_libs() -> frozenset[str]:
    """Library sonames the dynamic loader knows (``ldconfig -p``); empty if ldconfig is unavailable."""
    exe = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if exe is None:
        return frozenset()
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def _shim_dir(links: dict[str, Path]) -> Path | None:
    """A cache directory of ``soname -> real file`` symlinks (built atomically, reused if it matches)."""
    if not links:
        return None
    key = "-".join(sorted(f"{k}={v.name}" for k, v in links.items()))
    target = cache_root() / "perf-libs" / re.sub(r"[^A-Za-z0-9._=-]", "_", key)[:200]
    if all((target / name).exists() and (target / name).resolve() == src.resolve() for name, src in links.items()):
        return target

    def fill(tmp: Path) -> None:
        for name, src in links.items():
            os.symlink(src.resolve(), tmp / name)

    publish_cache_dir(target, fill, lambda t: all((t / n).exists() for n in links))
    return target


def perf_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for perf_analyzer: LD_LIBRARY_PATH with the CUDA runtime and libb64 it links.

    - ``libcudart.so.12``: ``site-packages/nvidia/cuda_runtime/lib`` (nvidia-cuda-runtime-cu12), else
      a symlink to the copy in ``nvidia_pytriton.libs``.
    - ``libb64.so.0d``: the system one (apt ``libb64-0d``) if ``ldconfig -p`` lists it, else a
      symlink to ``nvidia_pytriton.libs/libb64-*.so.0d`` in a cache directory.
    """
    env = dict(os.environ if base is None else base)
    entries: list[str] = []
    links: dict[str, Path] = {}
    sites = _site_dirs()
    known = _ldconfig_libs()

    cudart_dir = next((d / "nvidia" / "cuda_runtime" / "lib" for d in sites
                       if (d / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12").exists()), None)  # fmt: skip
    if cudart_dir is not None:
        entries.append(str(cudart_dir))
    elif "libcudart.so.12" not in known:
        src = next((p for d in sites for p in sorted((d / "nvidia_pytriton.libs").glob("libcudart-*.so.12*"))), None)
        if src is not None:
            links["libcudart.so.12"] = src
    if "libb64.so.0d" not in known:
        src = next((p for d in sites for p in sorted((d / "nvidia_pytriton.libs").glob("libb64-*.so.0d"))), None)
        if src is not None:
            links["libb64.so.0d"] = src
    with contextlib.suppress(OSError):
        shim = _shim_dir(links)
        if shim is not None:
            entries.append(str(shim))
    parts = entries + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else [])
    if parts:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


# --------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------
def parse_concurrency(value: str | int | Sequence[int]) -> list[int]:
    """``"1:16:2"`` (start:end[:step], end included, as perf_analyzer), ``"1,2,4"``, ``"4"``, ``4`` or a list."""
    if isinstance(value, int):
        values = [value]
    elif isinstance(value, str):
        text = value.strip()
        try:
            if ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3):
                    raise ValueError
                start, end, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
                if step <= 0 or end < start:
                    raise ValueError
                values = list(range(start, end + 1, step))
            else:
                values = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise PerfError(
                f"bad concurrency {value!r}: use START:END[:STEP] (e.g. 1:16:2), a list 1,2,4 or one number"
            ) from None
    else:
        values = [int(v) for v in value]
    if not values or any(v < 1 for v in values):
        raise PerfError(f"bad concurrency {value!r}: values must be whole numbers >= 1")
    return list(dict.fromkeys(values))


def default_stability_percentage(cpus: int | None = None) -> float:
    """30 % on small hosts (<= 4 cores, where perf_analyzer shares the cores with the server), else 10 %
    (perf_analyzer's own default)."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return 30.0 if n <= 4 else 10.0


def _strip_scheme(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url.strip()).rstrip("/")


@dataclass(frozen=True)
class ServiceTraits:
    """What perf_analyzer's `--service-kind` of the measured server changes about a run and its report; the perf
    code asks these, never the kind's name."""

    server: str  # what the report calls the server
    config_shapes: bool  # `--shape`s come from the served config (else only the ones given)
    stats_server_times: bool  # perf_analyzer reads the server's own queue/compute times (Triton's statistics API)
    package: str | None  # the installed package whose version is the server's (else its metadata says)


#: perf_analyzer's service kinds: Triton's own protocol, and TorchServe's REST API (HTTP only, a data file, its
#: queue and latency from its /metrics counters between the runs).
SERVICE_KINDS: dict[str, ServiceTraits] = {
    "triton": ServiceTraits("tritonserver", config_shapes=True, stats_server_times=True, package=None),
    "torchserve": ServiceTraits("TorchServe", config_shapes=False, stats_server_times=False, package="torchserve"),
}


@dataclass
class PerfOptions:
    """What to measure and how. ``url`` is ``host:port`` of the chosen protocol's endpoint."""

    model: str
    url: str
    protocol: Protocol = "grpc"
    concurrency: list[int] | str = field(default_factory=lambda: [1])
    #: Request rates (requests/s) instead of concurrency, if given.
    request_rate: list[float] | None = None
    batch_size: int = 1
    measurement_interval_ms: int = 3000
    #: None = :func:`default_stability_percentage` (30 on <= 4 cores).
    stability_percentage: float | None = None
    #: perf_analyzer's ``-r`` (measurement windows tried per point; its default is 10).
    max_trials: int | None = None
    #: ``{input: dims without the batch dim}``; variable dims not given here get :data:`DEFAULT_DIM`.
    shapes: dict[str, list[int]] = field(default_factory=dict)
    #: A perf_analyzer JSON data file; None = ``--input-data random``.
    input_data: Path | None = None
    service_kind: ServiceKind = "triton"
    #: TorchServe's Prometheus /metrics URL: read before and after each point for the server's queue and
    #: latency per request (perf_analyzer measures none there). None = not read.
    metrics_url: str | None = None
    model_version: str = ""
    default_dim: int = DEFAULT_DIM
    binary: Path | None = None
    #: Seconds before one perf_analyzer call is killed; None = computed from the window settings.
    timeout_s: float | None = None
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http"):
            raise PerfError(f"protocol must be grpc or http, not {self.protocol!r}")
        if self.service_kind not in SERVICE_KINDS:
            raise PerfError(f"service kind must be triton or torchserve, not {self.service_kind!r}")
        self.concurrency = parse_concurrency(self.concurrency)
        if self.request_rate is not None:
            self.request_rate = [float(r) for r in self.request_rate]
            if not self.request_rate or any(r <= 0 for r in self.request_rate):
                raise PerfError(f"bad request rate {self.request_rate!r}: values must be > 0")
        if self.batch_size < 1:
            raise PerfError(f"batch size must be >= 1, not {self.batch_size}")
        if self.measurement_interval_ms < 1:
            raise PerfError(f"measurement interval must be >= 1 ms, not {self.measurement_interval_ms}")
        if self.stability_percentage is None:
            self.stability_percentage = default_stability_percentage()
        if self.stability_percentage <= 0:
            raise PerfError(f"stability percentage must be > 0, not {self.stability_percentage}")
        if self.max_trials is not None and self.max_trials < 3:
            raise PerfError("max trials must be >= 3 (perf_analyzer needs 3 stable windows in a row)")
        self.url = _strip_scheme(self.url)
        if self.input_data is not None:
            self.input_data = Path(self.input_data)
        self.shapes = {k: [int(d) for d in v] for k, v in self.shapes.items()}

    @property
    def loads(self) -> Sequence[float]:
        """The points to measure: request rates if given, else concurrencies (a list after __post_init__)."""
        return self.request_rate if self.request_rate is not None else cast("list[int]", self.concurrency)

    def run_timeout(self) -> float:
        """Default kill timeout for one perf_analyzer call: every trial window, three times over, + 60 s."""
        if self.timeout_s is not None:
            return self.timeout_s
        return (self.max_trials or 10) * self.measurement_interval_ms / 1000 * 3 + 60


@dataclass
class PerfPoint:
    """One perf_analyzer measurement (one CSV row). Latencies are client-side."""

    concurrency: int
    throughput: float  # inferences/s
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    server_queue_us: float = 0.0
    server_compute_input_us: float = 0.0
    server_compute_infer_us: float = 0.0
    server_compute_output_us: float = 0.0
    client_send_us: float = 0.0
    client_recv_us: float = 0.0
    #: "Network+Server Send/Recv": the time on the wire and in the server's front end.
    network_us: float = 0.0
    protocol: str = "grpc"
    batch_size: int = 1
    #: Set (and concurrency 0) when measured at a fixed request rate.
    request_rate: float | None = None
    #: Average µs per response-cache hit / miss; only when the server has a response cache.
    cache_hit_us: float | None = None
    cache_miss_us: float | None = None
    #: Server-side time per request, queue included, where the server reports only that (TorchServe's
    #: ts_inference_latency_microseconds; its queue part is in ``server_queue_us``). None for Triton.
    server_latency_us: float | None = None
    #: `perf --protocol sse|ws|async|all` (repoforge's own client): time to the first response (for async, the 202
    #: that accepts it), the gaps between one stream's events, events per request, and requests sent / failed.
    first_response_p50_ms: float | None = None
    first_response_p99_ms: float | None = None
    event_gap_p50_ms: float | None = None
    event_gap_p99_ms: float | None = None
    events_per_request: float | None = None
    requests: int | None = None
    errors: int = 0

    @property
    def load(self) -> float:
        """The x value of this point: the request rate if set, else the concurrency."""
        return self.request_rate if self.request_rate is not None else self.concurrency

    @property
    def server_us(self) -> float:
        """Queue + compute input/infer/output, µs."""
        return (
            self.server_queue_us
            + self.server_compute_input_us
            + self.server_compute_infer_us
            + self.server_compute_output_us
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerfPoint:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def resolve_shapes(opts: PerfOptions, config: mc.ModelConfig | None) -> dict[str, list[int]]:
    """``--shape`` values: the user's, plus every input with a variable (-1) dim filled with
    ``opts.default_dim`` (dims without the batch dim, as perf_analyzer expects). With an input-data
    file only the user's shapes are used (the file carries its own)."""
    shapes = {k: list(v) for k, v in opts.shapes.items()}
    if config is None:
        return shapes
    names = {t.name for t in config.input}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise PerfError(
            f"--shape names unknown input(s) {', '.join(unknown)} of model {opts.model}; its inputs are {', '.join(sorted(names))}"
        )
    if opts.input_data is not None:
        return shapes
    for t in config.input:
        if t.name not in shapes and any(d < 0 for d in t.dims):
            shapes[t.name] = [d if d >= 0 else opts.default_dim for d in t.dims]
    return shapes


def _check_model(opts: PerfOptions, config: mc.ModelConfig) -> None:
    if config.max_batch_size == 0 and opts.batch_size > 1:
        raise PerfError(
            f"model {opts.model} has max_batch_size 0 (no batching), so batch size {opts.batch_size} is impossible; use -b 1"
        )
    if config.max_batch_size and opts.batch_size > config.max_batch_size:
        raise PerfError(
            f"batch size {opts.batch_size} is larger than model {opts.model}'s max_batch_size {config.max_batch_size}"
        )
    if config.model_transaction_policy.decoupled and opts.protocol == "http":
        raise PerfError(
            f"model {opts.model} is decoupled, which Triton serves only over gRPC streaming; use --protocol grpc"
        )


def _range_arg(values: Sequence[float]) -> str:
    """perf_analyzer's start:end:step for an arithmetic sequence (ValueError otherwise)."""

    def fmt(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else repr(float(v))

    if len(values) == 1:
        return fmt(values[0])
    step = values[1] - values[0]
    if step <= 0 or any(b - a != step for a, b in pairwise(values)):
        raise ValueError(f"{list(values)} is not an evenly spaced range; build one command per value")
    return f"{fmt(values[0])}:{fmt(values[-1])}:{fmt(step)}"


def build_command(
    opts: PerfOptions,
    model_config: mc.ModelConfig | None,
    *,
    load: float | None = None,
    csv_path: str | os.PathLike[str] = "perf.csv",
    binary: Path | None = None,
) -> list[str]:
    """The perf_analyzer argv for one point (``load``: a concurrency or request rate) or, with
    ``load=None``, for all of ``opts`` (needs evenly spaced values, e.g. from ``"1:16:2"``).

    Adds ``--shape NAME:dims`` for every variable-dim input of ``model_config``, ``-f csv``,
    ``--input-data random`` (or the file), ``--concurrency-range`` (or ``--request-rate-range``) and ``-b``.
    """
    exe = str(binary or opts.binary or "perf_analyzer")
    values = [load] if load is not None else opts.loads
    argv = [exe, "-m", opts.model]
    if not SERVICE_KINDS[opts.service_kind].stats_server_times:
        if opts.input_data is None:
            raise PerfError(
                "TorchServe needs an input data file (perf_analyzer cannot make random data for it); pass --input-data FILE.json"
            )
        argv += ["--service-kind", "torchserve", "-i", "http", "-u", opts.url]
    else:
        argv += ["-i", opts.protocol, "-u", opts.url]
        if model_config is not None:
            _check_model(opts, model_config)
            if model_config.model_transaction_policy.decoupled:
                argv.append("--streaming")
    if opts.model_version:
        argv += ["-x", opts.model_version]
    argv += ["-b", str(opts.batch_size)]
    flag = "--request-rate-range" if opts.request_rate is not None else "--concurrency-range"
    argv += [flag, _range_arg(values)]
    argv += ["--measurement-interval", str(int(opts.measurement_interval_ms))]
    argv += ["--stability-percentage", f"{opts.stability_percentage:g}"]
    if opts.max_trials is not None:
        argv += ["--max-trials", str(opts.max_trials)]
    argv += ["--input-data", str(opts.input_data) if opts.input_data is not None else "random"]
    for name, dims in resolve_shapes(
        opts, model_config if SERVICE_KINDS[opts.service_kind].config_shapes else None
    ).items():
        argv += ["--shape", f"{name}:{','.join(str(d) for d in dims)}"]
    argv += ["-f", os.fspath(csv_path)]
    argv += list(opts.extra_args)
    return argv


def commands(opts: PerfOptions, model_config: mc.ModelConfig | None, binary: Path | None = None) -> list[list[str]]:
    """One perf_analyzer argv per point, as :func:`run` executes them (CSV path ``perf-<load>.csv``)."""
    return [build_command(opts, model_config, load=v, csv_path=f"perf-{v:g}.csv", binary=binary) for v in opts.loads]


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------
_COLUMNS = {
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Server Cache Hit": "cache_hit_us",
    "Server Cache Miss": "cache_miss_us",
    "Client Recv": "client_recv_us",
}
_LATENCIES = {"p50 latency": "p50_ms", "p90 latency": "p90_ms", "p95 latency": "p95_ms", "p99 latency": "p99_ms"}


def parse_csv(text: str, protocol: str = "grpc", batch_size: int = 1) -> list[PerfPoint]:
    """PerfPoints from perf_analyzer's ``-f`` CSV (columns found by header name; latencies µs → ms).

    The first column is ``Concurrency`` or ``Request Rate``. The "Server Cache Hit/Miss" columns
    (average µs per cache hit/miss) exist only when the server has a response cache.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise PerfError("perf_analyzer wrote an empty CSV")
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = [h.strip() for h in rows[0]]
    if not header or header[0] not in ("Concurrency", "Request Rate") or "Inferences/Second" not in header:
        raise PerfError(f"unexpected perf_analyzer CSV header: {','.join(header)[:200]}")
    missing = [c for c in _LATENCIES if c not in header]
    if missing:
        raise PerfError(f"perf_analyzer CSV lacks columns {', '.join(missing)}")
    points = []
    for row in rows[1:]:
        if len(row) < len(header):
            continue  # perf_analyzer appends other sections (e.g. with --verbose-csv); keep measurement rows only
        cells = dict(zip(header, (c.strip() for c in row), strict=False))
        try:
            first = float(cells[header[0]])
            values: dict[str, Any] = {
                attr: float(cells[col]) for col, attr in _COLUMNS.items() if cells.get(col, "") != ""
            }
            values.update({attr: float(cells[col]) / 1000.0 for col, attr in _LATENCIES.items()})
        except ValueError:
            continue
        if header[0] == "Concurrency":
            values.update(concurrency=int(first), request_rate=None)
        else:
            values.update(concurrency=0, request_rate=first)
        points.append(PerfPoint(protocol=protocol, batch_size=batch_size, **values))
    if not points:
        raise PerfError("perf_analyzer's CSV has no measurement rows")
    return points


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def list_models(url: str, protocol: str = "grpc", timeout: float = 5.0) -> list[str] | None:
    """Names in the server's repository index, or None if the server cannot be asked."""
    url = _strip_scheme(url)
    try:
        return model_names(protocol, url, timeout)
    except Exception:  # noqa: BLE001 - best effort: any failure means "cannot tell"
        return None


_ERROR_HINTS = re.compile(r"error|failed|unable|cannot|couldn't|invalid|unknown|not found|refused", re.I)


def _last_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line
    for line in reversed(lines):
        if _ERROR_HINTS.search(line):
            return line
    return lines[-1] if lines else "(no output)"


def _explain(opts: PerfOptions, load: float, rc: int, output: str) -> PerfError:
    """One-line, actionable error for a failed perf_analyzer call."""
    line = _last_error_line(output)
    what = f"{'request rate' if opts.request_rate is not None else 'concurrency'} {load:g}"
    low = output.lower()
    if "error while loading shared libraries" in low:
        return PerfAnalyzerNotFoundError(
            f"perf_analyzer cannot load its libraries: install apt libb64-0d and nvidia-cuda-runtime-cu12 ({INSTALL_HINT}). perf_analyzer: {line}"
        )
    if "unknown model" in low or re.search(r"model .*(is )?not found", low) or "no model named" in low:
        models = list_models(opts.url, opts.protocol)
        if models and opts.model in models:
            return PerfError(
                f"model '{opts.model}' is in the repository of the server at {opts.url} but not ready (not loaded, or it "
                f"failed to load); load it (explicit mode: POST /v2/repository/models/{opts.model}/load). perf_analyzer: {line}"
            )
        have = f" (it serves: {', '.join(models)})" if models else (" (it serves no models)" if models == [] else "")
        return PerfError(
            f"model '{opts.model}' is not on the server at {opts.url}{have}; pass one of its models. perf_analyzer: {line}"
        )
    if any(s in low for s in ("failed to connect", "couldn't connect", "connection refused", "socket closed",
                              "unsupported protocol", "deadline exceeded", "unavailable", "timeout was reached")):  # fmt: skip
        return PerfError(
            f"cannot reach Triton over {opts.protocol}: is the server running at {opts.url}, and is that its {opts.protocol} port? perf_analyzer: {line}"
        )
    if "stable measurement" in low:
        pct = opts.stability_percentage or 0
        return PerfError(
            f"perf_analyzer could not get a stable measurement for {what} of model {opts.model} within {opts.max_trials or 10} "
            f"windows of {opts.measurement_interval_ms} ms (this host is noisy or shared); try --stability-percentage {max(50, pct * 2):g}, "
            f"a longer --measurement-interval or more --max-trials. perf_analyzer: {line}"
        )
    if "dynamic shape" in low or "provide shapes" in low:
        return PerfError(
            f"model {opts.model} has a variable-size input without a shape; pass --shape NAME:DIMS. perf_analyzer: {line}"
        )
    if opts.input_data is not None and ("json" in low or "input data" in low):
        return PerfError(
            f"perf_analyzer rejected the input data {opts.input_data}; check it matches the model's inputs and types. perf_analyzer: {line}"
        )
    return PerfError(
        f"perf_analyzer failed (exit {rc}) for model {opts.model} at {what} over {opts.protocol} at {opts.url}. perf_analyzer: {line}"
    )


def _measure_one(
    opts: PerfOptions, config: mc.ModelConfig | None, load: float, exe: Path, env: dict[str, str], workdir: Path
) -> PerfPoint:
    csv_path = workdir / f"perf-{load:g}.csv"
    argv = build_command(opts, config, load=load, csv_path=csv_path, binary=exe)
    timeout = opts.run_timeout()
    before = None if SERVICE_KINDS[opts.service_kind].stats_server_times else _scrape(opts)
    try:
        proc = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, errors="replace",
                              timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PerfError(
            f"perf_analyzer did not finish within {timeout:g} s for model {opts.model} at {load:g}; "
            "is the server overloaded? use a shorter --measurement-interval or fewer --max-trials"
        ) from None
    except OSError as exc:
        raise PerfAnalyzerNotFoundError(f"cannot run {exe}: {exc}; {INSTALL_HINT}") from None
    output = (proc.stdout or "") + "\n" + (proc.stderr or "")
    if proc.returncode != 0 or not csv_path.is_file():
        raise _explain(opts, load, proc.returncode, output)
    points = parse_csv(csv_path.read_text(), protocol=opts.protocol, batch_size=opts.batch_size)
    if before is not None:
        _add_torchserve_times(points[0], opts, before)
    return points[0]


def _scrape(opts: PerfOptions) -> dict[str, float] | None:
    """The server's metrics now, or None (no metrics URL, or it does not answer: the report then has no server times)."""
    if not opts.metrics_url:
        return None
    try:
        return scrape(opts.metrics_url, "ts_", timeout=10.0)
    except (OSError, ValueError):
        return None


def _add_torchserve_times(point: PerfPoint, opts: PerfOptions, before: dict[str, float]) -> None:
    after = _scrape(opts)
    got = torchserve_per_request(before, after, opts.model) if after is not None else None
    if got is not None:
        point.server_queue_us, point.server_latency_us = got[0], got[1]


def _format_point(p: PerfPoint) -> str:
    what = f"rate {p.request_rate:g}/s" if p.request_rate is not None else f"concurrency {p.concurrency}"
    return f"{p.protocol} {what}: {p.throughput:,.0f} infer/s, p50 {p.p50_ms:.2f} ms, p99 {p.p99_ms:.2f} ms"


def run(opts: PerfOptions, config: mc.ModelConfig | None, progress: Progress | None = None) -> list[PerfPoint]:
    """Measure every concurrency (or request rate) of ``opts``, one perf_analyzer call each.

    ``progress`` gets one line before and after each point. Raises :class:`PerfError` (one line) on
    the first failure; nothing is written outside a temporary directory.
    """
    return _run_many([(opts, config)], progress)[0]


def run_calibrated(
    opts: PerfOptions,
    config: mc.ModelConfig | None,
    calibration_model: str,
    calibration_config: mc.ModelConfig | None,
    progress: Progress | None = None,
) -> tuple[list[PerfPoint], list[PerfPoint]]:
    """Like :func:`run`, and also measure ``calibration_model`` with the same settings, interleaved
    point by point (calibration first), so both see the same machine state. Returns
    ``(points, calibration_points)`` for :class:`~repoforge.perf.report.PerfReport`'s relative mode."""
    cal = replace(opts, model=calibration_model, shapes={}, input_data=None)
    points, cal_points = _run_many([(opts, config), (cal, calibration_config)], progress, calibration_first=True)
    return points, cal_points


def required_inputs_data(opts: PerfOptions, config: mc.ModelConfig | None) -> str | None:
    """perf_analyzer input data (JSON) with random values for the required inputs only, for a Triton model that
    has optional ones; None when it has none (``--input-data random`` then fits). perf_analyzer's random data fills
    every input, optional ones included (a router's weights input then gets random "weights"), while an input-data
    file may leave an optional input out: it is then not sent, as a client that does not map it would not."""
    # optional inputs are a served config's (a kind whose shapes come from it); another kind's data file is given
    if (
        config is None
        or not SERVICE_KINDS[opts.service_kind].config_shapes
        or not any(t.optional for t in config.input)
    ):
        return None
    rng = np.random.default_rng(0)
    row: dict[str, Any] = {}
    for t in config.input:
        if t.optional:
            continue
        dims = opts.shapes.get(t.name) or [d if d >= 0 else opts.default_dim for d in t.dims]
        arr = random_array(triton_dtype(t.data_type), dims, rng)
        flat = [v.decode() if isinstance(v, bytes) else v for v in arr.ravel().tolist()]
        row[t.name] = {"content": flat, "shape": dims}
    return json.dumps({"data": [row]})


def _run_many(
    jobs: list[tuple[PerfOptions, mc.ModelConfig | None]], progress: Progress | None, calibration_first: bool = False
) -> list[list[PerfPoint]]:
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="repoforge-perf-data-") as data_dir:
        return _run_jobs([_without_optional(o, cfg, Path(data_dir)) for o, cfg in jobs], say, calibration_first)


def _without_optional(
    o: PerfOptions, cfg: mc.ModelConfig | None, folder: Path
) -> tuple[PerfOptions, mc.ModelConfig | None]:
    """`o` with a data file of the required inputs only where the model has optional ones and no file was given."""
    text = required_inputs_data(o, cfg) if o.input_data is None else None
    if text is None:
        return o, cfg
    path = folder / f"{o.model}.required-inputs.json"
    path.write_text(text)
    return replace(o, input_data=path), cfg


def _run_jobs(
    jobs: list[tuple[PerfOptions, mc.ModelConfig | None]], say: Progress, calibration_first: bool
) -> list[list[PerfPoint]]:
    exe = find_perf_analyzer(jobs[0][0].binary)
    for o, cfg in jobs:  # check every command before the first measurement
        build_command(o, cfg, load=o.loads[0], binary=exe)
    env = perf_env()
    order = list(range(len(jobs)))
    if calibration_first and len(jobs) > 1:
        order = [1, 0]
    results: list[list[PerfPoint]] = [[] for _ in jobs]
    with tempfile.TemporaryDirectory(prefix="repoforge-perf-") as tmp:
        workdir = Path(tmp)
        try:
            for i_load, load in enumerate(jobs[0][0].loads):
                for j in order:
                    o, cfg = jobs[j]
                    label = f"{o.model} (calibration)" if j == 1 else o.model
                    say(f"{label}: measuring {'request rate' if o.request_rate is not None else 'concurrency'} "
                        f"{load:g} ({i_load + 1}/{len(o.loads)})")  # fmt: skip
                    point = _measure_one(o, cfg, load, exe, env, workdir)
                    results[j].append(point)
                    say(f"{label}: {_format_point(point)}")
        except KeyboardInterrupt:
            raise MeasurementInterrupted(results) from None
    return results


class MeasurementInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``points`` holds what was measured before it, per job (the model, then any
    calibration model), so the caller can keep them."""

    def __init__(self, points: list[list[PerfPoint]]) -> None:
        super().__init__()
        self.points = points
