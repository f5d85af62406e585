"""`build --pack-env`'s archive: reproducible, relocatable (Triton extracts it under /tmp/python_env_*), holding what the
model declares and its dependencies; a package that is not installed or does not match is a build error. Served in
a real Triton by tests/integration/test_packed_env_served.py."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.errors import BuildError
from repoforge.output import MANIFEST
from repoforge.triton.execution_env import LOCK_KEY, PARAMETER, pack


def test_the_archive_is_byte_reproducible_and_lists_the_closure(tmp_path: Path) -> None:
    one = pack(["click>=8"], tmp_path / "a" / "env.tar.gz", "m/env.tar.gz", base=())
    two = pack(["click>=8"], tmp_path / "b" / "env.tar.gz", "m/env.tar.gz", base=())
    assert (tmp_path / "a" / "env.tar.gz").read_bytes() == (tmp_path / "b" / "env.tar.gz").read_bytes()
    assert one == two and [p.split("==")[0].lower() for p in one.packages] == ["click"]
    assert one.lock()["path"] == "m/env.tar.gz" and one.python.count(".") == 1


def test_activate_finds_the_env_wherever_it_is_extracted(tmp_path: Path) -> None:
    pack(["click>=8"], tmp_path / "env.tar.gz", "m/env.tar.gz", base=())
    where = tmp_path / "python_env_x" / "0"  # like Triton's extraction folder, not where it was packed
    where.mkdir(parents=True)
    with tarfile.open(tmp_path / "env.tar.gz") as tar:
        tar.extractall(where, filter="tar")
    # what Triton's stub launcher runs: bash -c "source <env>/bin/activate && exec ..."
    probe = "import sys, click; print(sys.prefix); print(click.__file__)"
    out = subprocess.run(
        ["bash", "-c", f"source {where}/bin/activate && exec python3 -c '{probe}'"],
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out[0] == str(where) and out[1].startswith(str(where / "lib"))


def test_a_package_that_is_not_installed_or_does_not_match_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no-such-package-here.*not installed"):
        pack(["no-such-package-here>=1"], tmp_path / "env.tar.gz", "m/env.tar.gz", base=())
    with pytest.raises(BuildError, match="declares click<1"):
        pack(["click<1"], tmp_path / "env.tar.gz", "m/env.tar.gz", base=())
    assert not (tmp_path / "env.tar.gz").exists()


def test_a_build_that_declares_nothing_packs_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "proj")]).exit_code == 0
    spec, out = tmp_path / "proj" / "spec.yaml", tmp_path / "repo"
    res = runner.invoke(main, ["build", str(spec), "-o", str(out), "--device", "cpu", "--pack-env", "-q"])
    assert res.exit_code == 0, res.output
    lock = json.loads((out / MANIFEST).read_text())
    assert LOCK_KEY not in lock and not list(out.rglob("*.tar.gz"))
    assert PARAMETER not in (out / "classifier" / "config.pbtxt").read_text()


def test_torchserve_refuses_pack_env_before_building(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "proj")]).exit_code == 0
    out = tmp_path / "ts"
    res = runner.invoke(main, ["build", str(tmp_path / "proj" / "spec.yaml"), "-o", str(out), "--target", "torchserve", "--pack-env"])  # fmt: skip
    assert res.exit_code == 2 and "requirements.txt" in res.output and not out.exists()
    assert "--pack-env" in runner.invoke(main, ["build", "--help"]).output
