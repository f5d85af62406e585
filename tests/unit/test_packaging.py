"""The wheel ships every package: setuptools is given an explicit list (the top-level backends/, handlers/ and
model_repo_templates/ folders are mapped into the package), so a new folder must be added there."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_python_folder_is_a_listed_package() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped = {pkg: ROOT / d for pkg, d in setup["package-dir"].items() if pkg}
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src" / "repoforge").rglob("*.py")}
    for pkg, folder in mapped.items():
        found |= {".".join([pkg, *p.parent.relative_to(folder).parts]) for p in folder.rglob("*.py")}
    assert found == set(setup["packages"])
    for folder in mapped.values():
        assert (folder / "__init__.py").is_file()
