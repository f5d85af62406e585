"""`repoforge doctor`: what this machine can serve, and what to install for each gap."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from repoforge.perf.analyzer import find_perf_analyzer, perf_env
from repoforge.servers.triton import TritonNotFoundError, find_tritonserver


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: the commands (or flags) this capability makes work, for the optional extras
    enables: str = ""
    #: an optional extra: repoforge builds and serves without it, only the commands in `enables` need it
    optional: bool = False


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _triton() -> list[Check]:
    try:
        inst = find_tritonserver()
    except TritonNotFoundError as exc:
        return [Check("tritonserver", False, str(exc).splitlines()[0], 'pip install "repoforge[triton]"')]
    backends = sorted(p.name for p in inst.backends_dir.iterdir() if p.is_dir()) if inst.backends_dir.exists() else []
    stub = inst.stub_for()
    out = [
        Check(
            "tritonserver", True, f"{inst.binary} (version {inst.version}); backends: {', '.join(backends) or 'none'}"
        )
    ]
    out.append(
        Check(
            "python backend stub",
            stub is not None,
            f"{stub}" if stub else f"no stub for Python {platform.python_version()}",
            "" if stub else "use Python 3.8-3.13 (the versions nvidia-pytriton ships stubs for)",
        )
    )
    otel = _has_opentelemetry(inst.binary)
    out.append(
        Check(
            "tracing (otel)",
            otel,
            "tritonserver has --trace-config mode=opentelemetry (OTLP/HTTP export; `deploy: tracing:`)"
            if otel
            else "this tritonserver has no OpenTelemetry trace mode: `deploy: tracing:` flags need the NGC image",
            "" if otel else "trace on the NGC image (nvcr.io/nvidia/tritonserver), which has it",
        )
    )
    native = [b for b in ("onnxruntime", "tensorrt", "pytorch") if b in backends]
    out.append(
        Check(
            "native GPU backends",
            bool(native),
            ", ".join(native)
            if native
            else "none here: repoforge serves ONNX/TorchScript with its Python-based onnxruntime/pytorch backends",
            "" if native else "on a GPU host use the NGC image (repoforge serve --print-command)",
        )
    )
    return out


def _has_opentelemetry(binary: Path) -> bool:
    """Whether tritonserver was built with its OpenTelemetry trace mode: its --trace-config help names the mode
    (read from the binary, ~20 MB, instead of starting a server)."""
    needle = b'"triton" and "opentelemetry"'
    try:
        with open(binary, "rb") as f:
            tail = b""
            for chunk in iter(lambda: f.read(1 << 20), b""):
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle) :]
    except OSError:
        return False
    return False


def _prometheus() -> list[Check]:
    """promtool checks `deploy k8s`'s rules; prometheus runs the query tests."""
    out = []
    for tool, why, enables in (
        ("promtool", "checks and unit-tests deploy k8s's alert rules", "deploy k8s (checks its alert rules)"),
        ("prometheus", "query tests", "deploy k8s's query tests (the rules and queries run on real series)"),
    ):
        path = shutil.which(tool)
        version = _run([path, "--version"]).splitlines()[:1] if path else []
        out.append(
            Check(
                tool,
                bool(path),
                f"{path} ({version[0]}); {why}" if path and version else (path or f"missing: {why}"),
                "" if path else "apt-get install -y prometheus",
                enables,
                optional=True,
            )
        )
    return out


def _module(name: str) -> str | None:
    """The installed version of an importable package (None when it is not installed); found without importing it
    (ray and openvino take seconds to import)."""
    if importlib.util.find_spec(name) is None:
        return None
    return _dist_version(name) or "installed"


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


#: The optional Python extras: (check name, import name, what it enables, how to install it).
EXTRAS = (
    ("ray", "ray", "batch --engine ray (Ray Data reads DATA, an actor pool scores it)", "pip install 'repoforge[ray]'"),
    (
        "openvino",
        "openvino",
        "optimize's openvino variant (measured in process)",
        "pip install 'repoforge[openvino]'",
    ),
    (
        "torch",
        "torch",
        "optimize of pytorch/torchscript models (export to ONNX), TorchScript runners, --target torchserve",
        "pip install 'repoforge[torchserve]' (torch 2.13 CPU)",
    ),
    (
        "onnxconverter-common",
        "onnxconverter_common",
        "optimize's fp16 variant",
        "pip install 'repoforge[optimize]'",
    ),
)


def _extras() -> list[Check]:
    out = []
    for name, module, enables, fix in EXTRAS:
        version = _module(module)
        out.append(
            Check(
                name,
                version is not None,
                f"{version}" if version else "not installed",
                "" if version else fix,
                enables,
                optional=True,
            )
        )
    return out


def _perf_analyzer() -> Check:
    try:
        exe = find_perf_analyzer()
    except Exception as exc:  # noqa: BLE001 - any failure here is the gap to report
        return Check("perf_analyzer", False, str(exc), 'pip install "tritonclient[all]==2.51.0"')
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=perf_env(), timeout=30)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    ok = proc.returncode == 0 or any("Perf Analyzer Version" in line for line in text)
    return Check(
        "perf_analyzer",
        ok,
        text[0] if ok and text else (text[-1] if text else "does not run"),
        "" if ok else "apt-get install -y libb64-0d; pip install nvidia-cuda-runtime-cu12",
    )


def doctor() -> list[Check]:
    """Each capability repoforge uses, found or not, with the command that fixes a gap; the optional extras
    (`optional`) also say which commands they enable."""
    checks = [Check("python", True, f"{platform.python_version()} ({platform.machine()}, {platform.system()})")]
    checks += _triton()
    checks.append(_perf_analyzer())
    ort = importlib.util.find_spec("onnxruntime") is not None
    checks.append(
        Check("onnxruntime", ort, "importable" if ort else "missing", "" if ort else "pip install onnxruntime")
    )
    smi = shutil.which("nvidia-smi")
    gpus = _run([smi, "-L"]) if smi else ""
    checks.append(
        Check(
            "GPU",
            bool(gpus),
            gpus or "no NVIDIA GPU visible: builds default to --device cpu",
            "" if gpus else "optional: on a GPU host, build with --device gpu and serve with the NGC image",
        )
    )
    java = shutil.which("java")
    checks.append(
        Check(
            "java (TorchServe)",
            bool(java),
            java or "missing",
            "" if java else "apt-get install -y openjdk-17-jre-headless",
            "--target torchserve (serve, validate, perf)",
            optional=True,
        )
    )
    ts = _module("ts")  # repoforge starts TorchServe as `python -m ts...`, so the module is what counts (not PATH)
    if ts is not None:
        ts = _dist_version("torchserve") or ts
    checks.append(
        Check(
            "torchserve",
            ts is not None,
            f"{ts}" if ts else "missing",
            "" if ts else "pip install torch==2.13.0 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml",
            "--target torchserve (build's .mar archives, serve, validate, perf)",
            optional=True,
        )
    )
    checks += _prometheus()
    redis = shutil.which("redis-server")
    checks.append(
        Check(
            "redis-server",
            bool(redis),
            redis or "missing",
            "" if redis else "apt-get install -y redis-server",
            "plugins with a Redis store (features, result_cache) served locally, and their tests",
            optional=True,
        )
    )
    checks += _extras()
    return checks


def as_dicts(checks: list[Check]) -> list[dict[str, object]]:
    return [asdict(c) for c in checks]
