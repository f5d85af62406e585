"""batch and drift DATA without a server (issue 23): a changed DATA is not resumed onto, BYTES tensors read from a
served config, optional inputs left out unless mapped, a rate with a time base, and one reader for both commands."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repoforge.batch.command import _settings
from repoforge.batch.model import BatchArgumentError, ModelInfo, TensorSpec, _tensors, bind
from repoforge.batch.progress import Progress
from repoforge.batch.source import open_source
from repoforge.batch.store import Manifest, Store, check_resume

INFO = ModelInfo("m", "1", 8, (TensorSpec("x", "FP32", (1,)),), (TensorSpec("y", "FP32", (1,)),), "c" * 64)


def _begun(out: Path, data: Path) -> dict[str, object]:
    """OUT as a run over `data` leaves it (manifest written, nothing scored yet); the settings it recorded."""
    src = open_source(data)
    settings = _settings(src.fingerprint(), INFO, bind(INFO, src.schema, {}, None, "row"), None, 10)
    Store(out, Manifest(INFO.to_dict(), settings, 1), "row", fresh=True).open()
    return settings


def _again(data: Path) -> dict[str, object]:
    src = open_source(data)
    return _settings(src.fingerprint(), INFO, bind(INFO, src.schema, {}, None, "row"), None, 10)


def test_resume_refuses_parquet_whose_values_changed(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    x = np.arange(1000, dtype=np.float32)
    pq.write_table(pa.table({"x": x}), data, row_group_size=300)
    out = tmp_path / "out"
    settings = _begun(out, data)
    assert check_resume(out, INFO.to_dict(), _again(data), restart=False) is not None  # unchanged: resumed
    assert _again(data) == settings
    x[500] = 7.5  # one value, same rows and schema (a daily job that overwrites its input)
    pq.write_table(pa.table({"x": x}), data, row_group_size=300)
    with pytest.raises(BatchArgumentError) as err:
        check_resume(out, INFO.to_dict(), _again(data), restart=False)
    msg = str(err.value)
    assert "data.parquet" in msg and "changed" in msg and "--restart" in msg, msg
    assert "{" not in msg, msg  # words, not Python dicts
    assert check_resume(out, INFO.to_dict(), _again(data), restart=True) is None


def test_resume_refuses_csv_whose_bytes_changed_even_with_the_same_size_and_time(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x\n1.0\n2.0\n3.0\n")
    out = tmp_path / "out"
    _begun(out, data)
    st = data.stat()
    data.write_text("x\n1.0\n2.5\n3.0\n")  # same size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    with pytest.raises(BatchArgumentError, match=r"d\.csv.*changed.*--restart"):
        check_resume(out, INFO.to_dict(), _again(data), restart=False)


def test_a_changed_row_count_is_said_in_words(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": np.arange(100, dtype=np.float32)}), data)
    out = tmp_path / "out"
    _begun(out, data)
    pq.write_table(pa.table({"x": np.arange(90, dtype=np.float32)}), data)
    with pytest.raises(BatchArgumentError) as err:
        check_resume(out, INFO.to_dict(), _again(data), restart=False)
    msg = str(err.value)
    assert "100 rows" in msg and "90 rows" in msg and "--restart" in msg, msg
    assert "{" not in msg and "'rows'" not in msg, msg


def test_other_settings_are_said_in_words(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": np.arange(100, dtype=np.float32)}), data)
    out = tmp_path / "out"
    settings = _begun(out, data)
    with pytest.raises(BatchArgumentError) as err:
        check_resume(out, INFO.to_dict(), {**settings, "rows_per_shard": 50}, restart=False)
    msg = str(err.value)
    assert "another run's output" in msg and "--rows-per-shard 10" in msg and "50" in msg, msg
    assert "{" not in msg, msg


def test_bytes_tensors_from_a_served_config() -> None:
    """Triton's config JSON says TYPE_STRING for BYTES (the features plugin, every ensemble on it)."""
    (t,) = _tensors([{"name": "TEXT", "data_type": "TYPE_STRING", "dims": ["1"]}])
    assert t.datatype == "BYTES" and t.np_dtype == np.dtype(object)


def test_optional_inputs_are_left_out_unless_mapped() -> None:
    """The router's ROUTE_WEIGHTS is optional: a DATA without it binds, and --map still sends it."""
    inputs = _tensors(
        [
            {"name": "x", "data_type": "TYPE_FP32", "dims": ["1"]},
            {"name": "ROUTE_WEIGHTS", "data_type": "TYPE_FP32", "dims": ["2"], "optional": True},
        ]
    )
    info = ModelInfo("score", "1", 8, inputs, (TensorSpec("y", "FP32", (1,)),), "c" * 64)
    schema = pa.schema([("x", pa.float32()), ("w", pa.list_(pa.float32(), 2)), ("ROUTE_WEIGHTS", pa.float32())])
    assert [b.input.name for b in bind(info, schema, {}, None, "row")] == ["x"]  # not even a same-named column
    mapped = bind(info, schema, {"ROUTE_WEIGHTS": ("w",)}, None, "row")
    assert [(b.input.name, b.columns) for b in mapped] == [("x", ("x",)), ("ROUTE_WEIGHTS", ("w",))]
    with pytest.raises(BatchArgumentError, match="'x' has no column"):
        bind(info, pa.schema([("w", pa.float32())]), {}, None, "row")


def test_the_first_progress_line_has_a_time_base() -> None:
    """Ray hands back its first rows all at once after its start: the rate is not rows over a nanosecond."""
    stream = io.StringIO()
    bar = Progress(300_000, stream=stream, interval=0.0)
    time.sleep(0.2)
    bar(1500)
    line = stream.getvalue().strip().splitlines()[-1]
    rate = float(line.split(", ")[1].split()[0].replace(",", ""))
    assert rate <= 1500 / 0.2, line
