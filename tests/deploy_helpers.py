"""Helpers the deploy tests share: builds that stand in for ones carrying their runtime, declared requirements,
a small TorchServe spec with a workflow."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

from repoforge.deploy.image import PYTHON_REQUIREMENTS, imports_installed_repoforge
from repoforge.output import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = (ROOT / "examples" / "tabular" / "models" / "classifier.onnx").as_posix()
#: A value that must never reach a file (tests search every file written for it).
SECRET_VALUE = "s3cr3t-value-never-written"
_IMPORT = re.compile(r"^\s*(from|import)\s+repoforge(\s|\.|$).*$", re.MULTILINE)


def _without_installed_repoforge(build_dir: Path) -> Path:
    """Stand in for a build whose Python files carry their own runtime: every line importing the installed
    repoforge is replaced (a no-op on builds that already carry it). What `image` reads is the lock and the
    imports; the models are not run here."""
    for py in list(build_dir.glob("*/*/*.py")) + list(build_dir.glob("*/*.py")):
        py.write_text(_IMPORT.sub("pass", py.read_text()))
    for archive in list(build_dir.glob("model-store/*.mar")) + list(build_dir.glob("wf-store/*.war")):
        buf = io.BytesIO()
        with zipfile.ZipFile(archive) as src, zipfile.ZipFile(buf, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith(".py"):
                    data = _IMPORT.sub("pass", data.decode()).encode()
                dst.writestr(item, data)
        archive.write_bytes(buf.getvalue())
    assert imports_installed_repoforge(build_dir) == []
    return build_dir


def _declare(build_dir: Path, requirements: dict[str, list[str]]) -> Path:
    lock = build_dir / MANIFEST
    data = json.loads(lock.read_text())
    data[PYTHON_REQUIREMENTS] = requirements
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return build_dir


def _ts_spec(root: Path, deploy: str = "") -> Path:
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\nrepository: ts-flow\nmodels:\n  - name: classifier\n    format: onnx\n"
        f"    path: {CLASSIFIER}\n    max_batch_size: 8\n"
        "  - name: pipeline\n    format: ensemble\n    steps:\n      - model: classifier\n"
        "        inputs: {input: input}\n        outputs: {probabilities: probabilities}\n"
        "deploy:\n  replicas: {min: 1, max: 3}\n  autoscale: {metric: request_rate, target: 50}\n" + deploy,
        encoding="utf-8",
    )
    return spec


#: `REPOFORGE_UPDATE_GOLDEN=1 pytest ...` rewrites the golden folders from what the code writes now.
UPDATE_GOLDEN = os.environ.get("REPOFORGE_UPDATE_GOLDEN") == "1"
DEPLOY_GOLDEN = ROOT / "tests" / "golden" / "deploy"


def _tree(root: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(root.iterdir()) if p.is_file()}


def assert_matches_golden(written: Path, kind: str) -> None:
    """The files a deploy command wrote equal tests/golden/deploy/<kind>/ byte for byte: one rule for every
    deploy shape, so a change to a manifest shows as a reviewable golden diff."""
    got = _tree(written)
    golden = DEPLOY_GOLDEN / kind
    if UPDATE_GOLDEN:
        shutil.rmtree(golden, ignore_errors=True)
        golden.mkdir(parents=True)
        for name, text in got.items():
            (golden / name).write_text(text, encoding="utf-8")
    want = _tree(golden)
    assert sorted(got) == sorted(want), "files written differ from the golden folder"
    for name in got:
        assert got[name] == want[name], f"{kind}/{name} differs from tests/golden/deploy/{kind}/{name}"
