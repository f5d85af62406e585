"""Shared fixtures: example repositories built once, and one real tritonserver serving them for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.servers.triton import TritonServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


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
    specs = {"ensemble": EXAMPLES / "ensemble", "versions": EXAMPLES / "versions", "kinds": ROOT / "tests" / "data" / "kinds"}
    return {name: build(d / "spec.yaml", out / name, device="cpu").output for name, d in specs.items()}


@pytest.fixture(scope="session")
def triton(built_examples: dict[str, Path]) -> Iterator[TritonServer]:
    """One real tritonserver on free 127.0.0.1 ports for the whole session, stopped even on failure."""
    server = TritonServer(list(built_examples.values()))
    with server:
        yield server
