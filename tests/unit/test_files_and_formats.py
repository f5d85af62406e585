"""Output folders, file modes and input formats (issue 23.12, 23.14, 23.20): what a user meets first."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.errors import BuildError
from repoforge.output import check_destination

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "tabular" / "spec.yaml"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_build_into_a_file_says_remove_it_first_even_without_force(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    res = CliRunner().invoke(main, ["build", str(SPEC), "-o", str(afile)])
    assert res.exit_code != 0 and "not a directory" in res.output and "remove it" in res.output, res.output
    assert "--force" not in res.output, res.output  # --force would not help: do not suggest it
    assert afile.read_text() == "mine\n"


def test_an_empty_existing_folder_needs_no_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    check_destination(out, force=False)  # no error
    res = CliRunner().invoke(main, ["build", str(SPEC), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "repoforge.lock.json").exists()
    with pytest.raises(BuildError, match="already exists; pass --force"):  # not empty any more
        check_destination(out, force=False)


def test_drift_profile_and_perf_baseline_are_readable_by_others(tmp_path: Path) -> None:
    from repoforge.drift.profile import write_profile
    from repoforge.perf.baseline import Baseline

    prof = write_profile({"format": "x"}, tmp_path / "ref.json")
    assert _mode(prof) == 0o644, oct(_mode(prof))
    saved = Baseline().save(tmp_path / "baseline.json")
    assert _mode(saved) == 0o644, oct(_mode(saved))


def test_csv_nan_and_empty_cells_are_nan_in_float_columns(tmp_path: Path) -> None:
    from repoforge.tables import read_table

    (tmp_path / "d.csv").write_text("a,b,c,name\n1.5,1,x,p\nnan,,y,\nNaN,3,,q\n,4,z,r\n")
    t = read_table(tmp_path / "d.csv")
    a = t.column("a").to_numpy(zero_copy_only=False)
    assert a[0] == 1.5 and np.isnan(a[1:]).all() and t.column("a").null_count == 0
    b = t.column("b").to_numpy(zero_copy_only=False)
    assert pa.types.is_floating(t.schema.field("b").type) and np.isnan(b[1]) and list(b[[0, 2, 3]]) == [1, 3, 4]
    assert t.column("name").to_pylist()[1] in (None, "")  # a text column keeps its missing cell missing


def test_batch_scores_a_csv_row_with_nan_instead_of_erroring_it(tmp_path: Path) -> None:
    from repoforge.batch.convert import prepare
    from repoforge.batch.model import Binding, TensorSpec
    from repoforge.batch.source import open_source

    (tmp_path / "d.csv").write_text("x\n1.0\nnan\n\n2.0\n")
    src = open_source(tmp_path / "d.csv")
    prep = prepare(src.read(0, src.num_rows), [Binding(TensorSpec("x", "FP32", (1,)), ("x",))])
    assert prep.ok.all(), prep.reasons
    assert np.isnan(prep.arrays["x"][1, 0])


def test_drift_reads_json_lines_and_parquet_folders_as_batch_does(tmp_path: Path) -> None:
    from repoforge.drift.data import read_features

    (tmp_path / "d.jsonl").write_text('{"age": 30, "city": "paris"}\n{"age": 41.5, "city": "berlin"}\n')
    feats = read_features(tmp_path / "d.jsonl")
    assert feats.rows == 2 and feats.columns["age"][0] == "numeric" and feats.columns["city"][0] == "categorical"
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"age": [1.0, 2.0]}), folder / "a.parquet")
    pq.write_table(pa.table({"age": [3.0]}), folder / "b.parquet")
    assert read_features(folder).rows == 3
