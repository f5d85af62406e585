"""Plumbing shared by the serving and tune benchmarks: the two example MLPs, perf_analyzer points,
Triton model statistics, a PyTriton server in a child process, in-process onnxruntime, and
bench/RESULTS.md sections.

Run as a script (``python bench/_serving_helpers.py pytriton ...``) it *is* that PyTriton server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"

#: name -> (layer sizes, input width); input "x", output "y" (as examples/perf).
MODELS = {"small": "SMALL_MLP", "compute": "COMPUTE_MLP"}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def make_models(directory: Path, kinds: Sequence[str] = ("small", "compute")) -> dict[str, Path]:
    """Write ``<kind>.onnx`` (deterministic, from repoforge.modelgen) and return their paths."""
    from repoforge import modelgen

    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in kinds:
        sizes = getattr(modelgen, MODELS[kind])
        path = directory / f"{kind}.onnx"
        modelgen.save(modelgen.mlp(sizes, seed=0, input_name="x", output_name="y"), path)
        out[kind] = path
    return out


def input_width(kind: str) -> int:
    from repoforge import modelgen

    return int(getattr(modelgen, MODELS[kind])[0])


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
@dataclass
class Point:
    throughput: float
    p50_ms: float
    p99_ms: float
    rows_per_exec: float | None = None
    stable: bool = True
    cpu: dict[str, float] = field(default_factory=dict)  # CpuSampler.result() over the run


#: Processes whose CPU time the benchmarks account for, by executable name -> label.
CPU_PROCESSES = {"perf_analyzer": "client", "tritonserver": "server", "triton_python_backend_stub": "stub"}


class CpuSampler:
    """CPU used while a perf_analyzer point runs: the host's busy fraction, and cores used by the client
    (perf_analyzer), the server (tritonserver) and the Python backend stubs (every process by that
    name on the host, so run nothing else alongside). With the throughput this says where CPU goes per
    request, and how far the host was from saturated."""

    def __init__(self) -> None:
        self._start: tuple[float, tuple[int, int], dict[int, tuple[str, float]]] | None = None
        self._children0 = 0.0
        self._result: dict[str, float] = {}

    @staticmethod
    def _host() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total jiffies, idle + iowait

    @staticmethod
    def _procs() -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                comm = head.split("(", 1)[1]
                label = next(
                    (v for k, v in CPU_PROCESSES.items() if k[:15] == comm), None
                )  # the kernel cuts comm at 15 chars
                if label:
                    fields = rest.split()
                    out[int(pid)] = (label, (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                continue
        return out

    @staticmethod
    def _children() -> float:
        """CPU seconds of this process's finished children: perf_analyzer has exited by the time a
        point is over, so /proc no longer shows it."""
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def __enter__(self) -> Self:
        self._start = (time.monotonic(), self._host(), self._procs())
        self._children0 = self._children()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        t0, (tot0, idle0), procs0 = self._start
        t1, (tot1, idle1), procs1 = time.monotonic(), self._host(), self._procs()
        wall = max(t1 - t0, 1e-9)
        res: dict[str, float] = {"busy": 1 - (idle1 - idle0) / max(1, tot1 - tot0)}
        for pid, (label, cpu1) in procs1.items():
            cpu0 = procs0.get(pid, (label, 0.0))[1]  # a process started meanwhile counts from 0
            res[label] = res.get(label, 0.0) + (cpu1 - cpu0) / wall
        res["client"] = res.get("client", 0.0) + (self._children() - self._children0) / wall
        self._result = res

    def result(self) -> dict[str, float]:
        return dict(self._result)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def exec_counts(http_url: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) from ``/v2/models/<m>/stats`` (None if unavailable)."""
    try:
        stats = get_json(f"http://{http_url}/v2/models/{model}/stats")["model_stats"]
    except Exception:  # noqa: BLE001
        return None
    return sum(int(s.get("inference_count", 0)) for s in stats), sum(int(s.get("execution_count", 0)) for s in stats)


def model_config(http_url: str, model: str) -> Any:
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2 as mc

    return json_format.ParseDict(
        get_json(f"http://{http_url}/v2/models/{model}/config"), mc.ModelConfig(), ignore_unknown_fields=True
    )


def measure(
    http_url: str,
    grpc_url: str,
    model: str,
    concurrency: int,
    *,
    interval_ms: int = 2000,
    stability: float = 30.0,
    max_trials: int = 5,
    config: Any = None,
    extra_args: Sequence[str] = (),
) -> Point:
    """One perf_analyzer point (gRPC, 1 row per request, random data) plus the rows per execution
    Triton formed meanwhile. If no 3 windows agree within ``stability`` %, it measures again
    accepting any 3 windows and marks the point unstable."""
    from repoforge.perf.analyzer import PerfError, PerfOptions, run

    cfg = config if config is not None else model_config(http_url, model)
    opts = PerfOptions(model=model, url=grpc_url, concurrency=[concurrency], measurement_interval_ms=interval_ms,
                       stability_percentage=stability, max_trials=max_trials, extra_args=list(extra_args))  # fmt: skip
    before = exec_counts(http_url, model)
    stable = True
    with CpuSampler() as cpu:
        try:
            p = run(opts, cfg)[0]
        except PerfError as exc:
            if "stable measurement" not in str(exc):
                raise
            stable = False
            opts.stability_percentage = 1000.0
            p = run(opts, cfg)[0]
    after = exec_counts(http_url, model)
    rows = None
    if before and after and after[1] > before[1]:
        rows = (after[0] - before[0]) / (after[1] - before[1])
    return Point(p.throughput, p.p50_ms, p.p99_ms, rows, stable, cpu.result())


def ort_rows_per_s(path: Path, batch: int, threads: int, seconds: float = 3.0, warmup: int = 50) -> dict[str, float]:
    """In-process onnxruntime: rows/s of back-to-back ``sess.run`` at ``batch`` rows (64 random
    inputs cycled), and p50/p99 µs per call. ``threads`` 0 = ORT's default pool."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    width = sess.get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((batch, width), dtype=np.float32) for _ in range(64)]
    for i in range(warmup):
        sess.run(["y"], {"x": inputs[i % 64]})
    times = []
    n = 0
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        sess.run(["y"], {"x": inputs[n % 64]})
        now = time.perf_counter()
        times.append(now - t)
        n += 1
        if now - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    times.sort()
    return {"rows_per_s": n * batch / elapsed, "p50_us": times[len(times) // 2] * 1e6,
            "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6, "batch": batch, "threads": threads}  # fmt: skip


# --------------------------------------------------------------------------------------------
# PyTriton in a child process
# --------------------------------------------------------------------------------------------
class PyTritonServer:
    """``python bench/_serving_helpers.py pytriton ...`` as a managed child (own process group)."""

    def __init__(self, onnx_path: Path, name: str, threads: int, workdir: Path, max_queue_delay_us: int = 500,
                 max_batch_size: int = 64) -> None:  # fmt: skip
        from repoforge.servers.ports import free_ports

        self.name = name
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.workdir = workdir
        self.argv = [sys.executable, str(Path(__file__).resolve()), "pytriton", "--model", str(onnx_path), "--name", name,
                     "--threads", str(threads), "--http", str(self.http_port), "--grpc", str(self.grpc_port),
                     "--metrics", str(self.metrics_port), "--workspace", str(workdir / f"pyt_ws_{name}"),
                     "--delay", str(max_queue_delay_us), "--max-batch", str(max_batch_size)]  # fmt: skip
        self.proc: Any = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __enter__(self) -> Self:
        from repoforge.servers.process import ManagedProcess
        from repoforge.servers.triton import server_env

        # The stub must load this Python's libpython (perf-anchors caveat 2): server_env puts its LIBDIR first.
        self.proc = ManagedProcess(self.argv, log_path=self.workdir / f"pytriton_{self.name}.log", env=server_env(),
                                   cwd=self.workdir, name="pytriton")  # fmt: skip
        self.proc.start()

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{self.name}/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            self.proc.wait_until(ready, 180, f"PyTriton model {self.name} ready")
        except Exception:
            self.proc.stop(timeout=30)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # clean shutdown: Triton and the proxy stop, the workspace goes
            deadline = time.monotonic() + 30
            while self.proc.alive and time.monotonic() < deadline:
                time.sleep(0.2)
            self.proc.stop(timeout=15)


def _pytriton_main(a: argparse.Namespace) -> None:
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from repoforge.runtime.onnx_runner import make_session

    sess = make_session(a.model, a.threads)  # the session repoforge's runner builds, with the same threads
    width = sess.get_inputs()[0].shape[1]
    out_width = sess.get_outputs()[0].shape[1]

    @batch
    def infer_func(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": sess.run(["y"], {"x": x})[0]}

    cfg = TritonConfig(http_address="127.0.0.1", http_port=a.http, grpc_address="127.0.0.1", grpc_port=a.grpc,
                       metrics_address="127.0.0.1", metrics_port=a.metrics)  # fmt: skip
    # Everything but statistics stays token-protected; perf_analyzer needs the statistics API (caveat 3).
    sec = TritonSecurityConfig(restricted_endpoints=["shared-memory", "model-repository", "trace", "logging"])
    with Triton(config=cfg, workspace=a.workspace, security_config=sec) as triton:
        triton.bind(model_name=a.name, infer_func=infer_func,
                    inputs=[Tensor(name="x", dtype=np.float32, shape=(width,))],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=(out_width,))],
                    config=ModelConfig(max_batch_size=a.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=a.delay)))  # fmt: skip
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------
def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rng(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def machine_text(tritonserver_version: str | None = None, load_at_start: str | None = None) -> str:
    from repoforge.perf.report import machine_info

    m = machine_info()
    load = load_average()
    if load_at_start:
        load = f"{load_at_start} at the start, {load}"
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1]
        )
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return (f"{m.cpu_model} ({m.cpu_count} vCPU{mem}), {m.platform}, Python {m.python}; "
            f"tritonserver {tritonserver_version or '2.51 (nvidia-pytriton ' + _version('nvidia-pytriton') + ')'}, "
            f"perf_analyzer from tritonclient {_version('tritonclient')}, onnxruntime {_version('onnxruntime')}, "
            f"numpy {_version('numpy')}; no GPU; load average (1/5/15 min) {load} at the end (other jobs share this VM); "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")  # fmt: skip


_HEADER = """# Benchmark results

Measured by `bench/test_serving.py` and `bench/test_tune.py` (each rewrites its own section).
Every figure in a section comes from one run on the machine named in it; ratios are taken
within that run. The machine is a small shared VM, so read medians together with their ranges.
"""


def update_results(section: str, markdown: str, path: Path = RESULTS) -> Path:
    """Replace (or append) ``<!-- section:start --> ... <!-- section:end -->`` in RESULTS.md."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)
    return path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)

    def text(self) -> str:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h) for i, h in enumerate(self.header)
        ]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join(
            [fmt.format(*self.header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in self.rows]
        )


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pytriton", help="serve an ONNX MLP with PyTriton (@batch, one onnxruntime session)")
    s.add_argument("--model", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--http", type=int, required=True)
    s.add_argument("--grpc", type=int, required=True)
    s.add_argument("--metrics", type=int, required=True)
    s.add_argument("--workspace", required=True)
    s.add_argument("--delay", type=int, default=500)
    s.add_argument("--max-batch", type=int, default=64)
    a = p.parse_args(argv)
    if a.cmd == "pytriton":
        _pytriton_main(a)


if __name__ == "__main__":
    main()
