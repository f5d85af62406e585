"""`repoforge doctor` names the optional extras and what each one enables (issue 23, item 22)."""

from __future__ import annotations

import importlib.util
import json
import shutil

from click.testing import CliRunner

from repoforge.cli import main
from repoforge.doctor import doctor

EXTRAS = {
    "ray": ("batch --engine ray", importlib.util.find_spec("ray") is not None),
    "openvino": ("optimize", importlib.util.find_spec("openvino") is not None),
    "torch": ("optimize", importlib.util.find_spec("torch") is not None),
    "torchserve": ("--target torchserve", importlib.util.find_spec("ts") is not None),
    "promtool": ("deploy k8s", shutil.which("promtool") is not None),
}


def test_every_optional_extra_says_whether_it_is_here_and_which_commands_it_enables() -> None:
    checks = {c.name: c for c in doctor()}
    for name, (command, present) in EXTRAS.items():
        assert name in checks, f"doctor has no check for {name}: {sorted(checks)}"
        c = checks[name]
        assert c.ok == present, (name, c.detail)
        assert command in c.enables, (name, c.enables)
        if not present:
            assert c.fix, f"{name} is missing but doctor says nothing about how to install it"


def test_doctor_prints_what_each_extra_enables() -> None:
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "optional extras" in res.output
    assert "enables: batch --engine ray" in res.output
    rows = json.loads(CliRunner().invoke(main, ["doctor", "--json"]).stdout)
    assert {r["name"]: r["enables"] for r in rows}["ray"].startswith("batch --engine ray")
