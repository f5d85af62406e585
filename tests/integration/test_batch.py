"""`repoforge batch` against real Triton: the session server for scoring, resume after kill -9 and poisoned rows;
a private server for a Triton kill and restart mid-run; one local Ray session (2 CPUs) for the Ray engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from repoforge.batch import batch
from repoforge.cli import main
from repoforge.servers.ports import free_ports
from repoforge.servers.triton import TritonServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "examples" / "ensemble" / "models" / "classifier.onnx"
ROWS = 100_000
KEY0 = 5_000_000  # ids differ from positions, so a mix-up of the two shows


def _scores(out: Path, key: str = "key") -> tuple[np.ndarray, np.ndarray]:
    """OUT's ids and outputs (sorted by id), read as any Parquet reader would (_-prefixed files skipped)."""
    table = pads.dataset(out, format="parquet").to_table().sort_by(key)
    return table.column(key).to_numpy(), np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repoforge", "batch", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """100k rows (Parquet in two files, row groups that straddle the shard bounds) and onnxruntime's answers."""
    root = tmp_path_factory.mktemp("batch-data")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS, 8)).astype(np.float32)
    keys = np.arange(KEY0, KEY0 + ROWS, dtype=np.int64)
    table = pa.table({"key": keys, "input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)})
    folder = root / "data"
    folder.mkdir()
    pq.write_table(table.slice(0, 45_000), folder / "a.parquet", row_group_size=7_000)
    pq.write_table(table.slice(45_000), folder / "b.parquet", row_group_size=7_000)
    small = root / "small.parquet"
    pq.write_table(table.slice(0, 20_000), small, row_group_size=3_000)
    expected = ort.InferenceSession(str(CLASSIFIER), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return {"folder": folder, "small": small, "keys": keys, "x": x, "expected": expected}


@pytest.fixture(scope="module")
def reference(triton: TritonServer, data: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted local-engine run over the 100k rows."""
    out = tmp_path_factory.mktemp("batch-ref") / "scores"
    result = batch(
        f"grpc://{triton.grpc_url}", "classifier", data=data["folder"], output=out, id_column="key",  # type: ignore[arg-type]
        rows_per_shard=10_000, batch_size=32, concurrency=4, show_progress=False,
    )  # fmt: skip
    assert result.complete and result.rows_scored == ROWS and result.rows_errored == 0
    return out


def test_100k_rows_equal_onnxruntime(reference: Path, data: dict[str, object]) -> None:
    keys, got = _scores(reference)
    assert np.array_equal(keys, data["keys"])  # every id once
    np.testing.assert_allclose(got, data["expected"], rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    manifest = json.loads((reference / "_manifest.json").read_text())
    assert manifest["ranges_done"] == manifest["ranges_total"] == 10
    assert manifest["rows_scored"] == ROWS
    assert manifest["model"]["version"] == "1" and len(manifest["model"]["config_sha256"]) == 64
    assert pq.read_table(reference / "_errors.parquet").num_rows == 0
    assert sorted(p.name for p in reference.glob("part-*.parquet")) == [f"part-{i:05d}.parquet" for i in range(10)]


def test_kill_9_mid_run_then_resume_gives_each_id_once(
    triton: TritonServer, data: dict[str, object], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    args = [f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(data["small"]), "-o", str(out),
            "--id-column", "key", "--rows-per-shard", "1000", "--batch-size", "8", "--concurrency", "2", "-q"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "repoforge", "batch", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = out / "_manifest.json"
            if manifest.exists():
                done = json.loads(manifest.read_text())["ranges_done"]
                if done >= 5:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, (
            f"the run ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed = json.loads((out / "_manifest.json").read_text())
    assert 5 <= killed["ranges_done"] < killed["ranges_total"] == 20

    resumed = _cli(*args[:-1], "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["complete"] and summary["rows_skipped"] == 1000 * killed["ranges_done"]
    assert summary["rows_scored"] + summary["rows_skipped"] == 20_000
    keys, got = _scores(out)
    ref_keys, ref = _scores(reference)
    assert np.array_equal(keys, ref_keys[:20_000])  # exactly the ids of DATA, once each
    np.testing.assert_allclose(got, ref[:20_000], rtol=1e-6, atol=1e-7)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_poisoned_rows_go_to_errors(triton: TritonServer, tmp_path: Path) -> None:
    """JSON Lines with rows of the wrong length, nulls and strings; CSV with stacked columns and a bad cell."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    poisoned = {5: x[5, :7].tolist(), 17: None, 42: ["a"] * 8, 99: [1.0, None, 1, 1, 1, 1, 1, 1]}
    lines = [json.dumps({"id": f"u{i}", "input": poisoned.get(i, x[i].tolist())}) for i in range(300)]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out-jsonl"
    result = batch(f"grpc://{triton.grpc_url}", "classifier", data=jsonl, output=out, id_column="id",
                   rows_per_shard=128, show_progress=False)  # fmt: skip
    assert (result.rows_scored, result.rows_errored) == (296, 4)
    errors = pq.read_table(out / "_errors.parquet").to_pylist()
    assert [e["id"] for e in errors] == ["u5", "u17", "u42", "u99"]
    assert all(e["reason"] for e in errors) and "7 values" in errors[0]["reason"] and "null" in errors[1]["reason"]
    table = pads.dataset(out, format="parquet").to_table()
    assert table.num_rows == 296 and "u5" not in table.column("id").to_pylist()
    expected = ort.InferenceSession(str(CLASSIFIER), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = {r["id"]: r["probabilities"] for r in table.to_pylist()}
    np.testing.assert_allclose(np.array(got["u6"]), expected[6], rtol=1e-5)

    csv = tmp_path / "rows.csv"
    cells = [[f"{v:.6f}" for v in row] for row in x[:50]]
    cells[3][2] = "oops"
    csv.write_text("f0,f1,f2,f3,f4,f5,f6,f7\n" + "\n".join(",".join(c) for c in cells) + "\n")
    out_csv = tmp_path / "out-csv"
    res = CliRunner().invoke(main, ["batch", f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(csv),
                                    "-o", str(out_csv), "--map", "f0,f1,f2,f3,f4,f5,f6,f7=input", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["rows_scored"], summary["rows_errored"]) == (49, 1)
    assert pq.read_table(out_csv / "_errors.parquet").to_pylist()[0]["row"] == 3


def _inference_count(triton: TritonServer, model: str) -> int:
    return sum(int(s.get("inference_count", 0)) for s in triton.model_stats(model))


def test_bad_input_fails_before_any_request(
    triton: TritonServer, data: dict[str, object], reference: Path, tmp_path: Path
) -> None:
    url = f"grpc://{triton.grpc_url}"
    before = _inference_count(triton, "classifier")
    runner = CliRunner()
    out = tmp_path / "never"
    cases = [
        (["--map", "nope=input"], "'nope'"),  # a column not in DATA
        (["--id-column", "missing"], "'missing'"),
        (["--map", "key=input"], "takes 8 values"),  # a scalar column for an [8] input
    ]
    for extra, words in cases:
        res = runner.invoke(
            main, ["batch", url, "-m", "classifier", "--input", str(data["small"]), "-o", str(out), *extra]
        )
        assert res.exit_code == 2 and words in res.output, res.output
    no_column = tmp_path / "other.parquet"
    pq.write_table(pa.table({"feature": [1.0, 2.0]}), no_column)
    res = runner.invoke(main, ["batch", url, "-m", "classifier", "--input", str(no_column), "-o", str(out)])
    assert res.exit_code == 2 and "model input 'input' has no column" in res.output and "--map" in res.output
    assert not out.exists()  # nothing written
    stamp = (reference / "_manifest.json").stat().st_mtime_ns
    res = runner.invoke(main, ["batch", url, "-m", "classifier", "--input", str(data["small"]), "-o", str(reference),
                               "--id-column", "key"])  # fmt: skip
    assert res.exit_code == 2 and "another run's output" in res.output, res.output
    assert (reference / "_manifest.json").stat().st_mtime_ns == stamp
    assert _inference_count(triton, "classifier") == before


def test_another_model_version_refuses_unless_restart(triton: TritonServer, tmp_path: Path) -> None:
    """`scorer` serves versions 1 and 2: OUT scored with 1 is not resumed by 2 unless --restart."""
    data = tmp_path / "d.parquet"
    x = np.random.default_rng(3).standard_normal((40, 4)).astype(np.float32)
    pq.write_table(pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)}), data)
    out = tmp_path / "out"
    url = f"grpc://{triton.grpc_url}"
    first = batch(url, "scorer", data=data, output=out, model_version="1", show_progress=False)
    assert first.complete and first.model["version"] == "1"
    res = CliRunner().invoke(
        main, ["batch", url, "-m", "scorer", "--input", str(data), "-o", str(out), "--model-version", "2"]
    )
    assert res.exit_code == 2 and "version 1" in res.output and "--restart" in res.output, res.output
    again = batch(url, "scorer", data=data, output=out, model_version="2", restart=True, show_progress=False)
    assert again.complete and again.rows_scored == 40 and again.rows_skipped == 0
    assert json.loads((out / "_manifest.json").read_text())["model"]["version"] == "2"


PICKY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    \"\"\"Refuses a request holding a negative value, as a model that validates its input does.\"\"\"

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if (x < 0).any():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative values are not allowed")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return out
"""


@pytest.fixture(scope="module")
def private_triton(built_examples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server of our own on fixed ports (a test kills and restarts it, so it comes back where the client looks),
    serving the classifier and a model that refuses some rows."""
    from repoforge.build import build

    root = tmp_path_factory.mktemp("picky")
    (root / "picky.py").write_text(PICKY)
    (root / "spec.yaml").write_text(
        "version: 1\nmodels:\n  - name: picky\n    format: python\n    path: picky.py\n    max_batch_size: 64\n"
        "    inputs: [{name: X, dtype: FP32, dims: [1]}]\n    outputs: [{name: Y, dtype: FP32, dims: [1]}]\n"
    )
    picky = build(root / "spec.yaml", root / "repo", device="cpu").output
    http, grpc, metrics = free_ports(3)
    server = TritonServer([built_examples["ensemble"], picky], http_port=http, grpc_port=grpc, metrics_port=metrics)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_rows_the_model_refuses_go_to_errors_and_their_batch_mates_are_scored(
    private_triton: TritonServer, tmp_path: Path
) -> None:
    x = np.arange(200, dtype=np.float32)
    x[[3, 77, 150]] = -1.0
    data = tmp_path / "x.parquet"
    pq.write_table(pa.table({"X": x}), data)
    out = tmp_path / "out"
    result = batch(f"grpc://{private_triton.grpc_url}", "picky", data=data, output=out, batch_size=32,
                   show_progress=False)  # fmt: skip
    assert (result.rows_scored, result.rows_errored) == (197, 3)
    errors = pq.read_table(out / "_errors.parquet").to_pylist()
    assert [e["row"] for e in errors] == [3, 77, 150]
    assert all("negative values are not allowed" in e["reason"] for e in errors)
    table = pads.dataset(out, format="parquet").to_table().sort_by("row")
    got = np.array(table.column("Y").to_pylist()).reshape(-1)
    keep = np.setdiff1d(np.arange(200), [3, 77, 150])
    np.testing.assert_array_equal(table.column("row").to_numpy(), keep)
    np.testing.assert_array_equal(got, x[keep] * 2)
    # a model that refuses every row: the run stops with one message instead of halving each batch down to rows
    pq.write_table(pa.table({"X": -np.ones(500, dtype=np.float32)}), data)
    res = CliRunner().invoke(main, ["batch", f"grpc://{private_triton.grpc_url}", "-m", "picky", "--input", str(data),
                                    "-o", str(tmp_path / "all-bad"), "--batch-size", "32", "-q"])  # fmt: skip
    assert res.exit_code == 1 and "refused each of the first 64 rows" in res.output, res.output


def test_http_url_and_build_folder_targets(
    triton: TritonServer, built_examples: dict[str, Path], data: dict[str, object], reference: Path, tmp_path: Path
) -> None:
    """http:// speaks Triton's HTTP API; a build folder is served for the run through the target seam."""
    small = tmp_path / "s.parquet"
    pq.write_table(pq.read_table(data["small"]).slice(0, 3_000), small)  # type: ignore[arg-type]
    ref_keys, ref = _scores(reference)
    for target in (f"http://{triton.http_url}", str(built_examples["ensemble"])):
        out = tmp_path / ("http" if target.startswith("http") else "folder")
        res = CliRunner().invoke(main, ["batch", target, "-m", "classifier", "--input", str(small), "-o", str(out),
                                        "--id-column", "key", "--json"])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["rows_scored"] == 3_000
        keys, got = _scores(out)
        assert np.array_equal(keys, ref_keys[:3_000])
        np.testing.assert_allclose(got, ref[:3_000], rtol=1e-6, atol=1e-7)
    res = CliRunner().invoke(main, ["batch", str(built_examples["ensemble"]), "-m", "nope", "--input", str(small),
                                    "-o", str(tmp_path / "x")])  # fmt: skip
    assert res.exit_code == 2 and "model 'nope' is not in" in res.output


def test_triton_killed_and_restarted_mid_run(
    private_triton: TritonServer, data: dict[str, object], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    args = [f"grpc://{private_triton.grpc_url}", "-m", "classifier", "--input", str(data["small"]), "-o", str(out),
            "--id-column", "key", "--rows-per-shard", "1000", "--batch-size", "8", "--concurrency", "2",
            "--retries", "10", "--timeout", "20", "-q"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "repoforge", "batch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            m = out / "_manifest.json"
            if m.exists() and json.loads(m.read_text())["ranges_done"] >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the server could be killed"
        assert private_triton.pid is not None
        os.killpg(private_triton.pid, signal.SIGKILL)
        private_triton.stop()
        time.sleep(1.0)
        private_triton.start()
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    if proc.returncode != 0:  # it may stop instead of waiting: then clearly, and a resume completes it
        assert proc.returncode == 1 and "rerun the same command to resume" in stderr, stderr
    print(f"run across the restart: exit {proc.returncode}, {stderr.strip()[-300:]}")
    resumed = _cli(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["complete"]
    keys, got = _scores(out)
    ref_keys, ref = _scores(reference)
    assert np.array_equal(keys, ref_keys[:20_000])
    np.testing.assert_allclose(got, ref[:20_000], rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray (2 CPUs) for the module: starting Ray is the slow part."""
    ray = pytest.importorskip("ray")
    from repoforge.batch.ray_engine import _init_ray

    _init_ray(None)  # what the engine does: 2 CPUs, retried where a loaded host misses Ray's 30 s start window
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_engine_resumes_a_local_run_with_the_same_result(
    ray_local: None, triton: TritonServer, data: dict[str, object], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    url = f"grpc://{triton.grpc_url}"
    common = dict(data=data["small"], output=out, id_column="key", rows_per_shard=5_000, show_progress=False)
    begun = batch(url, "classifier", engine="local", max_ranges=2, **common)  # type: ignore[arg-type]
    assert not begun.complete and begun.ranges_done == 2
    finished = batch(url, "classifier", engine="ray", batch_size=32, concurrency=4, **common)  # type: ignore[arg-type]
    assert finished.complete and finished.rows_skipped == 10_000 and finished.rows_scored == 10_000
    engines = [d["engine"] for d in json.loads((out / "_manifest.json").read_text())["done"].values()]
    assert engines == ["local", "local", "ray", "ray"]
    keys, got = _scores(out)
    ref_keys, ref = _scores(reference)
    assert np.array_equal(keys, ref_keys[:20_000])
    np.testing.assert_allclose(got, ref[:20_000], rtol=1e-6, atol=1e-7)


def test_string_columns_score_like_any_other(triton: TritonServer, tmp_path: Path) -> None:
    """A BYTES input (what the features plugin and every ensemble on it take) from a string column (issue 23.2)."""
    words = ["a", "héllo", "", "twelve chars", None, "x" * 40] * 50
    data = tmp_path / "text.parquet"
    pq.write_table(pa.table({"TEXT": words}), data)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["batch", f"grpc://{triton.grpc_url}", "-m", "text_length", "--input", str(data),
                                    "-o", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["rows_scored"], summary["rows_errored"]) == (250, 50)  # the nulls go to _errors
    table = pads.dataset(out, format="parquet").to_table().sort_by("row")
    kept = [w for w in words if w is not None]
    assert [v[0] for v in table.column("LENGTH").to_pylist()] == [len(w.encode()) for w in kept]


def test_a_crash_leaves_nothing_a_rerun_takes_for_progress(
    triton: TritonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies before a shard is done leaves no _manifest.json nor _errors.parquet (issue 23.2)."""
    import repoforge.batch.local as local

    def boom(*_args: object, **_kw: object) -> None:
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(local, "run_local", boom)
    data = tmp_path / "x.parquet"
    pq.write_table(pa.table({"TEXT": ["a", "b"]}), data)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="a bug"):
        batch(f"grpc://{triton.grpc_url}", "text_length", data=data, output=out, show_progress=False)
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_a_changed_input_is_not_resumed_onto(triton: TritonServer, data: dict[str, object], tmp_path: Path) -> None:
    """One value of DATA changed (same rows, same schema): the rerun refuses and says what changed (issue 23.1)."""
    small = tmp_path / "s.parquet"
    table = pq.read_table(data["small"]).slice(0, 2_000)  # type: ignore[arg-type]
    pq.write_table(table, small)
    out = tmp_path / "out"
    args = ["batch", f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(small), "-o", str(out),
            "--id-column", "key", "--json"]  # fmt: skip
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and json.loads(first.stdout)["rows_scored"] == 2_000, first.output
    x = np.stack(table.column("input").to_numpy(zero_copy_only=False)).astype(np.float32)
    x[700, 3] += 1.0
    changed = table.set_column(1, "input", pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8))
    pq.write_table(changed, small)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2, again.output
    assert "s.parquet changed" in again.output and "--restart" in again.output, again.output
    redone = CliRunner().invoke(main, [*args, "--restart"])
    assert redone.exit_code == 0 and json.loads(redone.stdout)["rows_scored"] == 2_000, redone.output


def test_ray_engine_keeps_rays_logs_in_a_file_and_rates_from_a_time_base(
    triton: TritonServer, data: dict[str, object], tmp_path: Path
) -> None:
    """The CLI with its own local Ray (issue 23.11): Ray's lines go to OUT/_ray.log, the command says where, and
    no progress line shows a rate of rows over an instant."""
    pytest.importorskip("ray")
    out = tmp_path / "scores"
    res = _cli(f"grpc://{triton.grpc_url}", "-m", "classifier", "--input", str(data["small"]), "-o", str(out),
               "--id-column", "key", "--engine", "ray", "--rows-per-shard", "5000", "--progress-interval", "0",
               timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    log = out / "_ray.log"
    assert f"Ray's own logs go to {log}" in res.stderr, res.stderr
    assert log.is_file() and (log.stat().st_mode & 0o777) == 0o644
    assert "core_worker" not in res.stderr and "raylet" not in res.stderr, res.stderr
    rates = [float(line.split(", ")[1].split()[0].replace(",", "")) for line in res.stderr.splitlines()
             if "rows/s, ETA" in line]  # fmt: skip
    assert rates and max(rates) < 1_000_000, res.stderr  # a loaded 2-core host scores thousands a second, not 1e8
