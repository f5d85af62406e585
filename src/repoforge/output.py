"""Atomic output directories: build into a temporary sibling, rename at the end.

A failed build leaves nothing behind, and an existing output is only replaced with `force`
(and only when it looks like something repoforge wrote, so `-o ~ --force` cannot eat a home folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from repoforge.errors import BuildError

if TYPE_CHECKING:
    from repoforge.plan import RepositoryPlan

MANIFEST = "repoforge.lock.json"


@dataclass
class BuildResult:
    """What a build wrote, for every target: the folder, the plan it came from and each file's sha256."""

    output: Path
    plan: RepositoryPlan
    files: dict[str, str]  # relative path → sha256
    target: str = "triton"
    archives: dict[str, Path] = field(default_factory=dict)  # TorchServe: model name → .mar
    workflows: dict[str, Path] = field(default_factory=dict)  # TorchServe: ensemble name → .war

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.plan.models]

    @property
    def warnings(self) -> list[str]:
        """What the build could not honour as written (printed, and kept in the plan)."""
        return self.plan.warnings

    @property
    def model_store(self) -> Path:
        return self.output / "model-store"

    @property
    def workflow_store(self) -> Path:
        return self.output / "wf-store"

    @property
    def config_properties(self) -> Path:
        return self.output / "config.properties"


def check_destination(out: Path, force: bool, looks_ours: Callable[[Path], bool] | None = None) -> None:
    """Refuse before any work is done, so a refused build costs nothing. An empty folder is used as if new."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():  # first: --force would not help, so it is not suggested
            raise BuildError(f"{out} exists and is not a directory; remove it or choose another output")
        if not any(out.iterdir()):  # an empty folder holds nothing to lose
            return
        if not force:
            raise BuildError(f"{out} already exists; pass --force to replace it")
        ours = (out / MANIFEST).exists() or not any(out.iterdir()) or (looks_ours is not None and looks_ours(out))
        if not ours:
            raise BuildError(
                f"{out} exists and was not written by repoforge (no {MANIFEST}); refusing to replace it even with --force"
            )


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `out`, on any error it is deleted."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            if not force and (not out.is_dir() or any(out.iterdir())):  # appeared (or filled) while we were building
                raise BuildError(f"{out} already exists; pass --force to replace it")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: What every file users read or share is created as (tempfile.mkstemp makes 0600, which nobody else can read).
FILE_MODE = 0o644


def write_file_atomic(path: Path, data: str | bytes, *, mode: int = FILE_MODE) -> Path:
    """Write `data` to a temp file beside `path`, then rename it over: a reader never sees half a file, a failed
    write leaves none, and the file gets `mode` rather than mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def publish_cache_dir(target: Path, fill: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """Build a shared cache directory in a temp sibling (`fill`), then rename it over `target`.

    Several processes (parallel tests, two servers) may race: a stale `target` is moved aside first
    (rename is atomic, rmtree is not), and losing the final rename is fine when the winner's copy is
    `complete`."""
    base = target.parent
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=base))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=base))
            with contextlib.suppress(OSError):
                os.rename(target, old / target.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path, header: dict[str, object]) -> dict[str, object]:
    """Write `repoforge.lock.json`: the header plus the sha256 of every file, sorted (byte-reproducible)."""
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {**header, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
