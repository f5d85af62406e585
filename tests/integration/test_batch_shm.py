"""`repoforge batch` through system shared memory (issue 26.4): against the session's local Triton the local engine
registers one region for the run (the server lists it meanwhile), answers exactly as plain gRPC does, and leaves no
region behind, neither registered nor in /dev/shm, after the run or after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from repoforge.batch import batch
from repoforge.servers.triton import TritonServer
from repoforge.triton.client import system_shared_memory_regions

pytestmark = pytest.mark.integration

ROWS = 40_000
PREFIX = "repoforge_batch_"


def _data(path: Path) -> Path:
    x = np.random.default_rng(11).standard_normal((ROWS, 8)).astype(np.float32)
    pq.write_table(pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)}), path)
    return path


def _scores(out: Path) -> np.ndarray:
    table = pads.dataset(out, format="parquet").to_table().sort_by("row")
    return np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))


def _ours(url: str, pid: int) -> list[str]:
    """Regions of process `pid` registered with the server."""
    return [r for r in system_shared_memory_regions(url) if r.startswith(f"{PREFIX}{pid}_")]


def _in_dev_shm(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{PREFIX}{pid}_*"))


def test_shared_memory_is_used_and_answers_as_plain_grpc(triton: TritonServer, tmp_path: Path) -> None:
    data = _data(tmp_path / "x.parquet")
    url = f"grpc://{triton.grpc_url}"
    common = dict(data=data, batch_size=32, concurrency=4, rows_per_shard=5_000, show_progress=False)
    seen: set[str] = set()
    result: dict[str, object] = {}

    def run() -> None:
        result["shm"] = batch(url, "classifier", output=tmp_path / "shm", shared_memory=True, **common)  # type: ignore[arg-type]

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 180
    while worker.is_alive() and time.monotonic() < deadline:
        seen.update(_ours(triton.grpc_url, os.getpid()))
        time.sleep(0.01)
    worker.join(timeout=60)
    assert not worker.is_alive()
    shm = result["shm"]
    assert shm.complete and shm.stats["shared_memory"] is True  # type: ignore[attr-defined]
    assert len(seen) == 1, f"the server listed {seen} during the run: one region for the whole run"
    assert _ours(triton.grpc_url, os.getpid()) == [] and _in_dev_shm(os.getpid()) == []  # unregistered, destroyed

    plain = batch(url, "classifier", output=tmp_path / "plain", shared_memory=False, **common)  # type: ignore[arg-type]
    assert plain.complete and plain.stats["shared_memory"] is False
    assert np.array_equal(_scores(tmp_path / "shm"), _scores(tmp_path / "plain"))  # bit for bit


def test_ctrl_c_unregisters_and_destroys_the_region(triton: TritonServer, tmp_path: Path) -> None:
    data = _data(tmp_path / "x.parquet")
    out = tmp_path / "out"
    args = [f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(data), "-o", str(out),
            "--rows-per-shard", "500", "--batch-size", "4", "--concurrency", "2", "-q"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "repoforge", "batch", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not _ours(triton.grpc_url, proc.pid):
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before Ctrl-C: {proc.stderr.read() if proc.stderr else ''}"
        assert _ours(triton.grpc_url, proc.pid), "no region registered within 120 s"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 130, err
    assert _ours(triton.grpc_url, proc.pid) == [] and _in_dev_shm(proc.pid) == []
    done = json.loads((out / "_manifest.json").read_text())["ranges_done"] if (out / "_manifest.json").exists() else 0
    assert done < ROWS // 500  # it was stopped mid-run
