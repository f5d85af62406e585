"""Every wrong spec in tests/bad_specs/ is refused with one precise, located message, and nothing is written.

Each corpus file starts with a header the test reads:

    # expect: <a substring of the problem's message>
    # at: <line>:<col> <field path>          (no field path for YAML-level problems)
    # device: cpu|gpu                       (optional, default cpu)
    # target: triton|torchserve             (optional, default triton)

The problem line must read `<file>:<line>:<col> <field>: ...<expect>...`, as users see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.errors import SpecError

CORPUS = Path(__file__).resolve().parents[1] / "bad_specs"
CASES = sorted(CORPUS.glob("*.yaml"))
_AT = re.compile(r"^(\d+):(\d+)(?: (\S+))?$")


@dataclass
class Expectation:
    message: str
    line: int
    column: int
    field: str
    device: str
    target: str = "triton"


def expectation(path: Path) -> Expectation:
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# ") or ":" not in line:
            break
        key, _, value = line[2:].partition(":")
        header[key.strip()] = value.strip()
    assert "expect" in header and header["expect"], f"{path.name}: missing '# expect: <message>' header"
    assert "at" in header, f"{path.name}: missing '# at: <line>:<col> <field>' header"
    at = _AT.match(header["at"])
    assert at, f"{path.name}: '# at:' must read '<line>:<col> <field path>', got {header['at']!r}"
    return Expectation(
        header["expect"],
        int(at[1]),
        int(at[2]),
        at[3] or "",
        header.get("device", "cpu"),
        header.get("target", "triton"),
    )


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 25
    messages = [expectation(p).message for p in CASES]
    assert len(set(messages)) == len(messages), "two corpus files expect the same message"


@pytest.mark.parametrize("spec", CASES, ids=[p.stem for p in CASES])
def test_bad_spec_is_refused_with_a_located_message(spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    exp = expectation(spec)
    monkeypatch.chdir(CORPUS)  # messages name the spec relative to the working directory, as the CLI shows them
    out = tmp_path / "out"

    with pytest.raises(SpecError) as info:
        build(spec, out, device=exp.device, target=exp.target)  # type: ignore[arg-type]
    err = info.value
    text = str(err)

    assert err.problems, "SpecError without problems"
    assert exp.message in text
    prefix = (
        f"{spec.name}:{exp.line}:{exp.column} {exp.field}:" if exp.field else f"{spec.name}:{exp.line}:{exp.column}:"
    )
    matching = [p for p in err.problems if str(p).startswith(prefix) and exp.message in str(p)]
    assert matching, f"no problem reads {prefix} ...{exp.message}...; got:\n{text}"
    # each problem is one line of the error, and every problem points into the spec itself
    for p in err.problems:
        assert str(p) in text.splitlines()
        assert p.location.file == spec.name
        assert Path(p.location.file).resolve() == spec.resolve()
        assert p.location.line is not None and p.location.line >= 1
        assert p.location.column is not None and p.location.column >= 1
    assert err.exit_code == 2

    # nothing was written: no output, no temporary build folder, nothing else either
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert list(tmp_path.iterdir()) == []


def test_fixed_shape_model_is_reproducible(tmp_path: Path):
    """tests/bad_specs/models/fixed.onnx is what make_models.py generates (and really has a fixed first axis)."""
    import importlib.util

    from repoforge import modelgen
    from repoforge.triton.onnx_io import read_signature

    spec = importlib.util.spec_from_file_location("bad_specs_make_models", CORPUS / "models" / "make_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    modelgen.save(module.fixed_first_axis(), tmp_path / "fixed.onnx")
    assert (tmp_path / "fixed.onnx").read_bytes() == (CORPUS / "models" / "fixed.onnx").read_bytes()
    sig = read_signature(CORPUS / "models" / "fixed.onnx")
    assert not sig.batchable()
    assert [t.shape for t in sig.inputs] == [(1, 4)]


def test_missing_onnx_file_is_the_only_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A missing ONNX file is one problem, not also 'format onnx needs inputs and outputs declared'."""
    monkeypatch.chdir(CORPUS)
    with pytest.raises(SpecError) as info:
        build(CORPUS / "missing_model_file.yaml", tmp_path / "out", device="cpu")
    assert [p.field for p in info.value.problems] == ["models[0].path"]
