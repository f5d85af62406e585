"""Ctrl-C (issue 23.13): a real `repoforge` process gets SIGINT mid-run, exits 130 with one line saying what was
kept (never click's `Aborted!`), and what it kept is really there: perf's points so far, batch's shards."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration


class _Run:
    """`python -m repoforge ARGS` with its stderr read line by line in a thread, so every wait is bounded."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "repoforge", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, words: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"ended before {words!r}: {''.join(self.seen)}"
                continue
            self.seen.append(line)
            if words in line:
                return
        raise AssertionError(f"no {words!r} in {timeout} s: {''.join(self.seen)}")

    def interrupt(self, timeout: float = 60) -> tuple[int, str]:
        """SIGINT, then the exit code and the rest of stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return rc, "".join(self.seen)


def test_perf_ctrl_c_writes_the_points_measured_so_far(triton: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "perf"
    run = _Run("perf", triton.http_url, "--grpc-url", triton.grpc_url, "-m", "classifier", "--concurrency", "1:8:1",
               "--measurement-interval", "300",
               "--max-trials", "4", "--stability-percentage", "1000", "-o", str(out))  # fmt: skip
    run.wait_for("classifier: measuring concurrency 2", timeout=120)  # the first point is measured
    rc, err = run.interrupt()
    assert rc == 130, err
    assert f"interrupted: the 1 point(s) measured so far are in {out / 'report.json'}" in err, err
    assert "Aborted!" not in err and "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert [p["concurrency"] for p in report["points"]] == [1]


def test_batch_ctrl_c_keeps_the_shards_and_says_rerun(triton: TritonServer, tmp_path: Path) -> None:
    rows = 20_000
    x = np.random.default_rng(3).standard_normal((rows, 8)).astype(np.float32)
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)}), data)
    out = tmp_path / "scores"
    args = ["batch", f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(data), "-o", str(out),
            "--rows-per-shard", "1000", "--batch-size", "4", "--concurrency", "1", "--progress-interval", "0.2"]  # fmt: skip
    run = _Run(*args)
    deadline = time.monotonic() + 120
    while not ((out / "_manifest.json").exists() and json.loads((out / "_manifest.json").read_text())["ranges_done"]):
        assert time.monotonic() < deadline and run.proc.poll() is None, "no shard was written"
        time.sleep(0.05)
    rc, err = run.interrupt()
    assert rc == 130, err
    assert f"interrupted: the shards written so far are kept in {out}; rerun the same command to resume" in err, err
    assert "Aborted!" not in err and "Traceback" not in err
    done = json.loads((out / "_manifest.json").read_text())["ranges_done"]
    assert 1 <= done < 20
    again = subprocess.run([sys.executable, "-m", "repoforge", *args, "--json"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["complete"] and summary["rows_skipped"] == 1000 * done
    assert summary["rows_scored"] + summary["rows_skipped"] == rows
