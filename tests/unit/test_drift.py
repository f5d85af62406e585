"""Drift, offline: a profile of reference data, then PSI/KS of current data against it. Seeded numpy, small data,
real files (Parquet, CSV, .npz) through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.drift import ks, psi
from repoforge.drift.profile import profile_categorical, profile_numeric

N = 4000


def _table(seed: int, age_shift: float = 0.0, countries: tuple[float, float, float] = (0.5, 0.3, 0.2)) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "age": rng.normal(40.0, 10.0, N) + age_shift,
            "income": rng.lognormal(10.0, 1.0, N),
            "clicks": rng.poisson(3.0, N),
            "country": rng.choice(["de", "fr", "us"], N, p=list(countries)).tolist(),
        }
    )


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    data = tmp_path / "ref.parquet"
    pq.write_table(_table(0), data)
    out = tmp_path / "ref.json"
    code, stdout, stderr = _invoke("drift", "profile", str(data), "-m", "clf", "-o", str(out))
    assert code == 0, stdout + stderr
    return out


def test_profile_records_model_source_and_bins(ref: Path) -> None:
    prof = json.loads(ref.read_text())
    assert prof["schema_version"] == 1 and prof["model"] == "clf" and prof["source"]["file"] == "ref.parquet"
    assert len(prof["source"]["sha256"]) == 64 and prof["source"]["rows"] == N
    age = prof["features"]["age"]
    assert len(age["edges"]) == 9 and len(age["frequencies"]) == 10  # 10 quantile bins by default
    assert abs(sum(age["frequencies"]) + age["missing"] - 1.0) < 1e-9
    assert all(abs(f - 0.1) < 0.01 for f in age["frequencies"])
    assert set(prof["features"]["country"]["categories"]) == {"de", "fr", "us"}
    # no clobber without --force, and the file is untouched
    before = ref.read_bytes()
    code, _, stderr = _invoke("drift", "profile", str(ref.parent / "ref.parquet"), "-m", "x", "-o", str(ref))
    assert code == 2 and "--force" in stderr and ref.read_bytes() == before
    code, _, _ = _invoke("drift", "profile", str(ref.parent / "ref.parquet"), "-m", "x", "-o", str(ref), "--force")
    assert code == 0 and json.loads(ref.read_text())["model"] == "x"
    assert sorted(p.name for p in ref.parent.iterdir()) == ["ref.json", "ref.parquet"]  # no temp file left


def test_in_distribution_keeps_psi_below_0_1(ref: Path, tmp_path: Path) -> None:
    cur = tmp_path / "cur.parquet"
    pq.write_table(_table(1), cur)
    code, stdout, stderr = _invoke("drift", "report", str(ref), str(cur), "-o", str(tmp_path / "out"), "--json")
    assert code == 0, stdout + stderr
    data = json.loads(stdout)
    assert {r["feature"] for r in data["features"]} == {"age", "income", "clicks", "country"}
    assert all(r["psi"] < 0.1 for r in data["features"]), [(r["feature"], r["psi"]) for r in data["features"]]
    assert data["drifted"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "drift-report.json",
        "drift-report.md",
        "drift-worst.png",
    ]
    assert json.loads((tmp_path / "out" / "drift-report.json").read_text()) == data


def test_shifted_feature_crosses_0_2_is_named_first_and_exits_1(ref: Path, tmp_path: Path) -> None:
    cur = tmp_path / "shifted.parquet"
    pq.write_table(_table(2, age_shift=6.0), cur)
    out = tmp_path / "out"
    code, stdout, _ = _invoke("drift", "report", str(ref), str(cur), "-o", str(out))
    assert code == 1
    assert stdout.splitlines()[0].startswith("age") and "DRIFT" in stdout.splitlines()[0]
    data = json.loads((out / "drift-report.json").read_text())
    assert data["worst"] == "age" and data["drifted"] == ["age"]
    assert data["features"][0]["psi"] > 0.2 and data["features"][0]["ks"] > 0.15
    md = (out / "drift-report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| feature")]
    assert table[0].startswith("| age |")  # worst first
    # a looser threshold passes the same data; an existing OUT needs --force
    code, _, stderr = _invoke("drift", "report", str(ref), str(cur), "-o", str(out), "--max-psi", "5")
    assert code == 2 and "--force" in stderr
    code, _, _ = _invoke("drift", "report", str(ref), str(cur), "-o", str(out), "--max-psi", "5", "--force")
    assert code == 0


def test_categorical_shift_detected(ref: Path, tmp_path: Path) -> None:
    cur = tmp_path / "cur.csv"
    pcsv.write_csv(_table(3, countries=(0.2, 0.3, 0.5)), cur)  # CSV reads back the same columns
    code, stdout, _ = _invoke("drift", "report", str(ref), str(cur), "-o", str(tmp_path / "out"), "--json")
    assert code == 1
    data = json.loads(stdout)
    assert data["drifted"] == ["country"] and data["features"][0]["ks"] is None


def test_npz_2d_array_becomes_indexed_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ref, cur = tmp_path / "ref.npz", tmp_path / "cur.npz"
    np.savez(ref, x=rng.normal(size=(N, 3)).astype(np.float32), kind=np.array(["a", "b"] * (N // 2)))
    shifted = rng.normal(size=(N, 3)).astype(np.float32)
    shifted[:, 2] *= 3.0  # wider, same mean: PSI and KS still see it
    np.savez(cur, x=shifted, kind=np.array(["a", "b"] * (N // 2)))
    prof = tmp_path / "ref.json"
    assert _invoke("drift", "profile", str(ref), "-m", "m", "-o", str(prof))[0] == 0
    assert set(json.loads(prof.read_text())["features"]) == {"x[0]", "x[1]", "x[2]", "kind"}
    code, stdout, _ = _invoke("drift", "report", str(prof), str(cur), "-o", str(tmp_path / "out"), "--json")
    assert code == 1 and json.loads(stdout)["drifted"] == ["x[2]"]


def test_missing_feature_exits_2_naming_it_and_writes_nothing(ref: Path, tmp_path: Path) -> None:
    cur = tmp_path / "cur.parquet"
    pq.write_table(_table(5).drop_columns(["income"]), cur)
    out = tmp_path / "out"
    code, _, stderr = _invoke("drift", "report", str(ref), str(cur), "-o", str(out))
    assert code == 2 and "income" in stderr and "cur.parquet" in stderr
    assert not out.exists()


@pytest.mark.parametrize("which", ["reference", "current"])
def test_unreadable_file_exits_2_naming_it_and_writes_nothing(ref: Path, tmp_path: Path, which: str) -> None:
    broken = tmp_path / ("broken.json" if which == "reference" else "broken.parquet")
    broken.write_text("not what it claims to be")
    cur = tmp_path / "cur.parquet"
    pq.write_table(_table(6), cur)
    args = (str(broken), str(cur)) if which == "reference" else (str(ref), str(broken))
    out = tmp_path / "out"
    code, _, stderr = _invoke("drift", "report", *args, "-o", str(out))
    assert code == 2 and "broken" in stderr
    assert not out.exists()
    code, _, stderr = _invoke("drift", "profile", str(tmp_path / "nope.csv"), "-m", "m", "-o", str(tmp_path / "p.json"))
    assert code == 2 and "nope.csv" in stderr and not (tmp_path / "p.json").exists()


def test_help_and_usage_errors() -> None:
    for args in (["drift", "--help"], ["drift", "profile", "--help"], ["drift", "report", "--help"]):
        code, stdout, _ = _invoke(*args)
        assert code == 0 and "Usage" in stdout
    assert "--max-psi" in _invoke("drift", "report", "--help")[1]
    assert _invoke("drift", "profile", "x.csv", "-o", "p.json")[0] == 2  # -m is required
    code, _, stderr = _invoke("drift", "report", "ref.json", "cur.csv", "-o", "out", "--max-psi", "0")
    assert code == 2 and "--max-psi" in stderr  # a usage error, before any file is read


def test_psi_function_and_ks_against_scipy() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=N), rng.normal(0.5, 1.0, N)
    feat = profile_numeric(a)
    assert psi(feat, rng.normal(size=N)) < 0.1 < 0.2 < psi(feat, b + 0.5)
    assert psi(feat, np.full(N, np.nan)) > 0.2  # a feature that arrives empty has drifted
    stats = pytest.importorskip("scipy.stats")
    k = ks(feat, b)
    assert k is not None and abs(k - stats.ks_2samp(a, b).statistic) < 0.02
    cat = profile_categorical(np.array(["x"] * 90 + ["y"] * 10, dtype=object))
    assert psi(cat, ["x"] * 90 + ["y"] * 10) < 1e-9
    assert psi(cat, ["z"] * 100) > 0.2  # unseen categories pool into "other"
    const = profile_numeric(np.ones(100))
    assert psi(const, np.ones(50)) < 1e-9 and psi(const, np.full(50, 2.0)) > 0.2
