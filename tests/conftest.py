"""Shared fixtures: example repositories built once, and one real tritonserver serving them for the session."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.servers.triton import TritonServer

# A suite started in the background by a shell without job control (`cmd &` in a script) inherits SIGINT ignored,
# and so would every server and CLI the tests start: the Ctrl-C tests (exit 130, what was kept) would then wait out
# their timeouts. A handler of our own is reset to the default at exec, so the processes we start get Ctrl-C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="session")
def golden_cpu_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/golden/full.spec.yaml minus its tensorrt model (a plan cannot run on CPU), with absolute paths."""
    import yaml

    data = yaml.safe_load((GOLDEN / "full.spec.yaml").read_text(encoding="utf-8"))
    data["models"] = [m for m in data["models"] if m["format"] != "tensorrt"]
    for m in data["models"]:
        if "path" in m:
            m["path"] = str((GOLDEN / m["path"]).resolve())
        if isinstance(m.get("versions"), dict):
            m["versions"] = {v: str((GOLDEN / p).resolve()) for v, p in m["versions"].items()}
    path = tmp_path_factory.mktemp("golden") / "full.cpu.spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def repoforge_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Backend dirs and perf_analyzer library links go to a per-session temp cache, never the user's ~/.cache
    (subprocesses such as the CLI inherit the variable)."""
    patch = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("repoforge-cache")
    patch.setenv("REPOFORGE_CACHE_DIR", str(cache))
    yield cache
    patch.undo()


@pytest.fixture(scope="session")
def built_examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ensemble and versions examples and the streaming/sequence/BYTES models, built for CPU
    (their model names do not collide, so one server serves all of them)."""
    out = tmp_path_factory.mktemp("repos")
    specs = {
        "ensemble": EXAMPLES / "ensemble",
        "versions": EXAMPLES / "versions",
        "kinds": ROOT / "tests" / "data" / "kinds",
        "torchscript": _torchscript_project(tmp_path_factory.mktemp("torchscript")),
        "optimize": _optimize_project(tmp_path_factory.mktemp("optimize")),
    }
    return {name: build(d / "spec.yaml", out / name, device="cpu").output for name, d in specs.items()}


def _torchscript_project(root: Path) -> Path:
    """A TorchScript model served on CPU through repoforge's torchscript runner (torch files are not
    byte-reproducible, so it is made per session rather than committed)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.jit.script(net).save(str(root / "tiny.pt"))
    (root / "spec.yaml").write_text(
        "version: 1\nmodels:\n  - name: tiny_ts\n    format: torchscript\n    path: tiny.pt\n    max_batch_size: 16\n"
        "    inputs: [{name: INPUT__0, dtype: FP32, dims: [4]}]\n    outputs: [{name: OUTPUT__0, dtype: FP32, dims: [2]}]\n"
    )
    return root


def _optimize_project(root: Path) -> Path:
    """A trained classifier with `optimize:` (fp32, INT8 static and FP16, every accepted one shipped as a version,
    the selected one last), so the session's server serves what the optimize step selected."""
    from repoforge.optimize.sample import write_project

    write_project(root, name="opt_classifier", variants="[fp32, int8_static, fp16]", extra="      ship: all\n")
    return root


@pytest.fixture(scope="session")
def triton(built_examples: dict[str, Path]) -> Iterator[TritonServer]:
    """One real tritonserver on free 127.0.0.1 ports for the whole session, stopped even on failure. It exports the
    summary quantiles `repoforge deploy k8s` turns on in pods (tests/integration/test_deploy_prometheus.py queries them)."""
    server = TritonServer(list(built_examples.values()), extra_args=["--metrics-config=summary_latencies=true"])
    with server:
        yield server
