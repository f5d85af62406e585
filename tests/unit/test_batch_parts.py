"""batch without a server: readers by range, columns to inputs (poisoned rows set aside), outputs to Arrow, the
store's manifest and crash cleanup, the checks that refuse bad input, and a server that is not there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from repoforge.batch.convert import ERROR, POS, arrow_type, chunk_table, prepare, to_arrow
from repoforge.batch.model import BatchArgumentError, BatchServerError, Binding, ModelInfo, TensorSpec, bind, parse_maps
from repoforge.batch.scorer import ScoreOptions, Scorer
from repoforge.batch.source import RowRange, open_source, ranges
from repoforge.batch.store import Manifest, Store, check_folder, check_resume, shard_name
from repoforge.cli import main
from repoforge.servers.ports import free_ports

INPUT = TensorSpec("input", "FP32", (3,))
OUTPUT = TensorSpec("y", "FP32", (2,))
INFO = ModelInfo("m", "1", 8, (INPUT,), (OUTPUT,), "c" * 64)


def _table(n: int) -> pa.Table:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return pa.table({"k": np.arange(n) + 100, "input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3)})


def test_ranges_cover_every_row_once() -> None:
    rs = ranges(25, 10)
    assert [(r.start, r.stop) for r in rs] == [(0, 10), (10, 20), (20, 25)]
    assert ranges(0, 10) == []


def test_parquet_folder_read_by_position_across_files_and_row_groups(tmp_path: Path) -> None:
    t = _table(100)
    (tmp_path / "d").mkdir()
    pq.write_table(t.slice(0, 37), tmp_path / "d" / "a.parquet", row_group_size=10)
    pq.write_table(t.slice(37), tmp_path / "d" / "b.parquet", row_group_size=9)
    (tmp_path / "d" / "_SUCCESS.parquet").write_text("not data")  # `_` files are skipped, as Spark writes them
    src = open_source(tmp_path / "d")
    assert (src.kind, src.num_rows) == ("parquet", 100)
    got = pa.concat_tables(tb for _, tb in src.iter_ranges(ranges(100, 13), ["k"]))
    assert got.column("k").to_pylist() == list(range(100, 200))
    assert src.read(35, 40).column("k").to_pylist() == [135, 136, 137, 138, 139]
    some = [r for r in ranges(100, 7) if r.index % 3 != 1]  # a resume: one pass over what is left, skipping the rest
    assert [(r, tb.column("k").to_pylist()) for r, tb in src.iter_ranges(some, ["k"])] == [
        (r, list(range(100 + r.start, 100 + r.stop))) for r in some
    ]
    runs = src.read_groups(ranges(100, 5))
    assert [r for run in runs for r in run] == ranges(100, 5) and len(runs) < 20  # ranges in one group share a run


def test_csv_and_jsonl_sources(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    src = open_source(tmp_path / "a.csv")
    assert (src.kind, src.num_rows, src.columns) == ("csv", 3, ["a", "b"])
    assert src.read(1, 3, ["b"]).column("b").to_pylist() == [4, 6]
    (tmp_path / "a.jsonl").write_text('{"v": [1, 2]}\n{"v": ["x", 2]}\n')  # a type clash: kept as JSON text
    mixed = open_source(tmp_path / "a.jsonl")
    assert mixed.num_rows == 2 and pa.types.is_string(mixed.schema.field("v").type)


def test_prepare_sets_poisoned_rows_aside_with_reasons() -> None:
    col = pa.array([[1, 2, 3], [1, 2], None, [1, None, 3], [4, 5, 6]], pa.list_(pa.float64()))
    prep = prepare(pa.table({"input": col}), [Binding(INPUT, ("input",))])
    assert prep.ok.tolist() == [True, False, False, False, True]
    assert "2 values" in prep.reasons[1] and "null" in prep.reasons[2] and "null" in prep.reasons[3]
    np.testing.assert_array_equal(prep.arrays["input"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    assert prep.arrays["input"].dtype == np.float32


def test_prepare_stacks_scalar_columns_and_parses_text() -> None:
    table = pa.table({"a": ["1", "oops", "[2, 3]"], "b": [1.0, 2.0, 3.0], "c": [0, 0, 0]})
    prep = prepare(table, [Binding(INPUT, ("a", "b", "c"))])
    assert prep.ok.tolist() == [True, False, False]
    assert "'oops'" in prep.reasons[1]
    np.testing.assert_array_equal(prep.arrays["input"], [[1.0, 1.0, 0.0]])


def test_outputs_to_arrow_with_nulls_for_failed_rows() -> None:
    ok = np.array([True, False, True])
    arr = to_arrow(np.array([[1, 2], [3, 4]], np.float32), OUTPUT, ok)
    assert arr.type == arrow_type(OUTPUT) == pa.list_(pa.float32(), 2)
    assert arr.to_pylist() == [[1.0, 2.0], None, [3.0, 4.0]]
    assert to_arrow(None, OUTPUT, np.array([False])).to_pylist() == [None]
    chunk = chunk_table(np.array([7, 8, 9]), pa.array([1, 2, 3]), "row", {"y": np.ones((2, 2), np.float32)}, [OUTPUT],
                        ok, {1: "bad"})  # fmt: skip
    assert chunk.column(ERROR).to_pylist() == [None, "bad", None] and chunk.column(POS).to_pylist() == [7, 8, 9]


def test_parse_maps_and_bind_name_what_is_wrong() -> None:
    assert parse_maps(["a,b=x", "c=y"]) == {"x": ("a", "b"), "y": ("c",)}
    with pytest.raises(BatchArgumentError, match="COLUMN=INPUT"):
        parse_maps(["nonsense"])
    schema = _table(1).schema
    assert bind(INFO, schema, {}, None, "row")[0].columns == ("input",)
    with pytest.raises(BatchArgumentError, match="'nope' .* is not in DATA"):
        bind(INFO, schema, {"input": ("nope",)}, None, "row")
    with pytest.raises(BatchArgumentError, match="no input 'other'"):
        bind(INFO, schema, {"other": ("k",)}, None, "row")
    with pytest.raises(BatchArgumentError, match="has no column in DATA"):
        bind(INFO, pa.schema([("k", pa.int64())]), {}, None, "row")
    with pytest.raises(BatchArgumentError, match="name of output 'y'"):
        bind(INFO, schema, {}, "k", "y")


def _store(out: Path, fresh: bool = True, manifest: Manifest | None = None) -> Store:
    m = manifest or Manifest(INFO.to_dict(), {"rows_per_shard": 2}, 2)
    return Store(out, m, "row", fresh=fresh)


def _chunk(r: RowRange, bad: set[int] = frozenset()) -> pa.Table:  # type: ignore[assignment]
    pos = np.arange(r.start, r.stop)
    ok = np.array([p not in bad for p in pos])
    return chunk_table(pos, pa.array(pos), "row", {"y": np.zeros((int(ok.sum()), 2), np.float32)}, [OUTPUT], ok,
                       {i: "poisoned" for i, p in enumerate(pos) if p in bad})  # fmt: skip


def test_store_writes_shard_then_manifest_and_cleans_what_a_kill_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = _store(out)
    store.open()
    done = store.write_range(RowRange(0, 0, 2), [_chunk(RowRange(0, 0, 2), {1})], "local", 0.1)
    assert (done.rows, done.errors) == (1, 1)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["done"]["0"]["file"] == "part-00000.parquet" and manifest["rows_errored"] == 1
    # a kill after the rename of shard 1 but before the manifest: the stray shard and temp files are removed
    pq.write_table(pa.table({"row": [2]}), out / shard_name(1))
    (out / "part-00002.parquet.tmp-123").write_text("half")
    resumed = check_resume(out, INFO.to_dict(), {"rows_per_shard": 2}, restart=False)
    assert resumed is not None and list(resumed.done) == [0]
    again = _store(out, fresh=False, manifest=resumed)
    again.open()
    assert sorted(p.name for p in out.iterdir()) == ["_errors", "_manifest.json", "part-00000.parquet"]
    again.write_range(RowRange(1, 2, 4), [_chunk(RowRange(1, 2, 4))], "ray", 0.1)
    errors = pq.read_table(again.finish()).to_pylist()
    assert errors == [{"row": 1, "position": 1, "reason": "poisoned"}]
    # a shard deleted by hand: its range is no longer done, so a resume scores it again
    (out / shard_name(1)).unlink()
    third = _store(out, fresh=False, manifest=check_resume(out, INFO.to_dict(), {"rows_per_shard": 2}, restart=False))
    third.open()
    assert list(third.manifest.done) == [0]
    with pytest.raises(RuntimeError, match="expected 2"):
        again.write_range(RowRange(1, 2, 4), [_chunk(RowRange(1, 2, 3))], "local", 0.1)


def test_check_resume_refuses_another_run_or_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _store(out).open()
    with pytest.raises(BatchArgumentError, match="another run's output"):
        check_resume(out, INFO.to_dict(), {"rows_per_shard": 3}, restart=False)
    other = {**INFO.to_dict(), "version": "2"}
    with pytest.raises(BatchArgumentError, match="version 1 .*--restart"):
        check_resume(out, other, {"rows_per_shard": 2}, restart=False)
    assert check_resume(out, other, {"rows_per_shard": 2}, restart=True) is None
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(BatchArgumentError, match="holds no batch manifest"):
        check_folder(tmp_path / "foreign")


def test_cli_usage_errors_before_any_work(tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    pq.write_table(_table(3), data)
    runner = CliRunner()
    base = ["batch", "-m", "m", "-o", str(tmp_path / "out")]
    cases = [
        (["grpc://127.0.0.1:1", "--input", str(tmp_path / "missing.parquet")], "does not exist"),
        (["nowhere", "--input", str(data)], "neither a repository folder nor a server URL"),
        ([str(data), "--input", str(data)], "is a file"),
        (["grpc://127.0.0.1:1", "--input", str(data), "--concurrency", "0"], "--concurrency must be >= 1"),
        (["grpc://127.0.0.1:1", "--input", str(data), "--map", "x"], "COLUMN=INPUT"),
    ]
    for args, words in cases:
        res = runner.invoke(main, [*base, *args])
        assert res.exit_code == 2 and words in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_torchserve_build(tmp_path: Path) -> None:
    ts = tmp_path / "ts"
    (ts / "model-store").mkdir(parents=True)
    (ts / "config.properties").write_text("inference_address=http://127.0.0.1:8080\n")
    data = tmp_path / "d.parquet"
    pq.write_table(_table(3), data)
    res = CliRunner().invoke(main, ["batch", str(ts), "-m", "m", "--input", str(data), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Triton only yet" in res.output


def test_scorer_stops_clearly_when_the_server_is_not_there() -> None:
    """A port nobody listens on: the transient error is retried, then one message says what happened."""
    (port,) = free_ports(1)

    async def go() -> None:
        scorer = Scorer(
            "grpc", f"127.0.0.1:{port}", INFO, ScoreOptions(batch_size=4, retries=2, backoff_s=0.01, timeout_s=5)
        )
        try:
            await scorer.score({"input": np.zeros((3, 3), np.float32)})
        finally:
            await scorer.close()

    with pytest.raises(BatchServerError, match="did not answer 'm' after 2 retries"):
        asyncio.run(go())


def test_progress_lines_when_not_a_terminal() -> None:
    import io

    from repoforge.batch.progress import Progress

    stream = io.StringIO()
    bar = Progress(1000, 200, stream=stream, interval=0.0)
    bar(300)
    bar.close()
    line = stream.getvalue().strip().splitlines()[-1]
    assert line.startswith("500/1,000 rows (50%)") and "rows/s" in line and "ETA" in line
    quiet = io.StringIO()
    Progress(10, stream=quiet, interval=0.0, enabled=False)(5)
    assert quiet.getvalue() == ""
