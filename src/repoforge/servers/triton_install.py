"""Where tritonserver is, and what it needs to run the Python backend: the pytriton-bundled install (or an
explicit binary such as the NGC image's), a backend folder built in the user's cache (the stub must sit next to
``libtriton_python.so``; site-packages is never modified), and the environment the stub needs to find this venv
(its ``python3`` first on PATH; PYTHONPATH is ignored) and its libraries.

The bundled server has no native onnxruntime or pytorch backend, while every build serves ONNX and TorchScript
with ``backend: "onnxruntime"`` / ``"pytorch"`` (what the NGC image has). So the cached backend folder also gets
repoforge's Python-based backends of those names (``<name>/model.py``, which Triton loads for a backend that has no
``libtriton_<name>.so``): validate, serve, perf, batch and rollout run the very configs that get deployed."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from repoforge.backends import runtime_files, ship_runtime
from repoforge.output import publish_cache_dir

NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
INSTALL_HINT = 'pip install "repoforge[triton]"'

_STUB = "triton_python_backend_stub"
_PY_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
#: Triton backends repoforge's private server gets as Python-based backends (backends/server/<name>/model.py)
PYTHON_BASED_BACKENDS = ("onnxruntime", "pytorch")


def python_based_backend(name: str) -> Path:
    """The shipped ``model.py`` of repoforge's Python-based backend ``name`` (one of PYTHON_BASED_BACKENDS)."""
    return Path(str(resources.files("repoforge.backends").joinpath("server", name, "model.py")))


class TritonNotFoundError(FileNotFoundError):
    """No usable tritonserver; the message says what to install."""


# --------------------------------------------------------------------------------------------
# Locating an install
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TritonInstall:
    """Where a tritonserver and its companions live."""

    binary: Path
    #: Backend directory shipped with the install (pytriton: only ``python/``, without a stub).
    backends_dir: Path
    #: Cache implementations (``local/libtritoncache_local.so``), if any.
    caches_dir: Path | None = None
    #: pytriton only: ``python_backend_stubs/<major.minor>/triton_python_backend_stub``.
    stubs_dir: Path | None = None
    #: pytriton only: the auditwheel-renamed shared libraries tritonserver links against.
    libs_dir: Path | None = None
    #: Label for cache directories, e.g. "pytriton-0.7.0" or "local".
    version: str = "local"
    source: Literal["pytriton", "explicit", "path"] = "explicit"

    def stub_for(self, version: tuple[int, int] | None = None) -> Path | None:
        """The pytriton python-backend stub for a Python ``(major, minor)`` (default: the running one)."""
        if self.stubs_dir is None:
            return None
        major, minor = version or sys.version_info[:2]
        stub = self.stubs_dir / f"{major}.{minor}" / _STUB
        return stub if stub.is_file() else None


def _pytriton_version() -> str:
    try:
        return "pytriton-" + importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return "pytriton-unknown"


def _install_from_tree(binary: Path, source: Literal["pytriton", "explicit", "path"]) -> TritonInstall:
    """Describe the install around ``<root>/bin/tritonserver``."""
    root = binary.resolve().parent.parent
    backends = root / "backends"
    if not backends.is_dir() and Path("/opt/tritonserver/backends").is_dir():
        backends = Path("/opt/tritonserver/backends")
    if not backends.is_dir():
        raise TritonNotFoundError(
            f"tritonserver at {binary} has no backends directory ({root / 'backends'} or "
            f"/opt/tritonserver/backends). Use the NGC image {NGC_IMAGE} or {INSTALL_HINT}."
        )
    caches = root / "caches"
    if not caches.is_dir():
        caches = Path("/opt/tritonserver/caches")
    stubs = root / "python_backend_stubs"
    libs = root.parent.parent / "nvidia_pytriton.libs"  # <site-packages>/pytriton/tritonserver
    is_pytriton = stubs.is_dir()
    return TritonInstall(
        binary=binary,
        backends_dir=backends,
        caches_dir=caches if caches.is_dir() else None,
        stubs_dir=stubs if is_pytriton else None,
        libs_dir=libs if libs.is_dir() else None,
        version=_pytriton_version() if is_pytriton else "local",
        source="pytriton" if is_pytriton and source != "explicit" else source,
    )


def find_tritonserver(binary: str | os.PathLike[str] | None = None) -> TritonInstall:
    """Locate tritonserver.

    Order: ``binary`` (``--tritonserver PATH``), ``$REPOFORGE_TRITONSERVER``, the one bundled in the
    ``pytriton`` package, then ``tritonserver`` on PATH (e.g. inside the NGC image).
    """
    explicit = binary if binary is not None else os.environ.get("REPOFORGE_TRITONSERVER") or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir() and (path / "bin" / "tritonserver").is_file():
            path = path / "bin" / "tritonserver"
        if not path.is_file() or not os.access(path, os.X_OK):
            raise TritonNotFoundError(f"tritonserver not found or not executable: {path}")
        return _install_from_tree(path.absolute(), "explicit")

    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        candidate = pkg / "tritonserver" / "bin" / "tritonserver"
        if candidate.is_file():
            return _install_from_tree(candidate, "pytriton")

    on_path = shutil.which("tritonserver")
    if on_path:
        return _install_from_tree(Path(on_path), "path")

    raise TritonNotFoundError(
        "tritonserver not found. Install the CPU-capable Triton 2.51 bundled with PyTriton with\n"
        f"    {INSTALL_HINT}\n"
        "or pass --tritonserver PATH (e.g. /opt/tritonserver/bin/tritonserver in the NGC image "
        f"{NGC_IMAGE})."
    )


# --------------------------------------------------------------------------------------------
# Backend directory and environment
# --------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$REPOFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/repoforge``, else ``~/.cache/repoforge``."""
    env = os.environ.get("REPOFORGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "repoforge"


def _fingerprint(paths: Sequence[Path]) -> str:
    return json.dumps([[str(p), p.stat().st_size, int(p.stat().st_mtime)] for p in paths], separators=(",", ":"))


def _backend_dir_ok(backends: Path, fingerprint: str) -> bool:
    python = backends / "python"
    try:
        stamp = (backends / ".source").read_text()
    except OSError:
        return False
    return stamp == fingerprint and all((python / n).is_file() for n in (*_PY_BACKEND_FILES, _STUB))


def private_backends(install: TritonInstall) -> tuple[str, ...]:
    """The Python-based backends `prepare_backend_dir` adds to ``install``'s backends: those it lacks natively
    (none for an install that brings its own stub, such as the NGC image's, whose folder is used as it is)."""
    if (install.backends_dir / "python" / _STUB).is_file() or install.stubs_dir is None:
        return ()
    return tuple(n for n in PYTHON_BASED_BACKENDS if not (install.backends_dir / n / f"libtriton_{n}.so").is_file())


def prepare_backend_dir(install: TritonInstall, root: Path | None = None) -> Path:
    """Return a ``--backend-directory`` whose ``python/`` holds the backend *and* a matching stub.

    For an install that already has the stub in place (NGC image) that is its own directory. For
    pytriton it is ``<cache>/triton-<version>-py<maj.min>/backends``, built once, atomically (build in
    a temp dir, then rename), and rebuilt if the source files change. site-packages is never modified.
    It also holds repoforge's Python-based backends (`private_backends`): ``onnxruntime/model.py`` and
    ``pytorch/model.py``.
    """
    if (install.backends_dir / "python" / _STUB).is_file() or install.stubs_dir is None:
        return install.backends_dir
    major, minor = sys.version_info[:2]
    stub = install.stub_for((major, minor))
    if stub is None:
        have = sorted(p.name for p in install.stubs_dir.iterdir() if (p / _STUB).is_file())
        raise TritonNotFoundError(
            f"the Triton python backend has no stub for Python {major}.{minor} "
            f"(available: {', '.join(have) or 'none'}); run repoforge with one of those Pythons"
        )
    sources = [install.backends_dir / "python" / n for n in _PY_BACKEND_FILES]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise TritonNotFoundError(f"incomplete Triton python backend, missing: {', '.join(missing)}")

    python_based = {name: python_based_backend(name) for name in private_backends(install)}
    runtime = [src for _, src in runtime_files()] if python_based else []
    fingerprint = _fingerprint([*sources, stub, *python_based.values(), *runtime])

    base = (root or cache_root()) / f"triton-{install.version}-py{major}.{minor}"
    target = base / "backends"
    if _backend_dir_ok(target, fingerprint):
        return target

    def fill(tmp: Path) -> None:
        (tmp / "python").mkdir()
        for src in sources:
            shutil.copy2(src, tmp / "python" / src.name)
        shutil.copy2(stub, tmp / "python" / _STUB)
        os.chmod(tmp / "python" / _STUB, 0o755)
        for name, model_py in python_based.items():
            (tmp / name).mkdir()
            shutil.copyfile(model_py, tmp / name / "model.py")
            ship_runtime(tmp / name)  # the stub puts <backends>/<name> on sys.path: model.py imports this copy
        (tmp / ".source").write_text(fingerprint)

    publish_cache_dir(target, fill, lambda t: _backend_dir_ok(t, fingerprint))
    return target


def _prepend(var: str, entries: Sequence[str | os.PathLike[str] | None], env: dict[str, str]) -> None:
    parts = [os.fspath(e) for e in entries if e]
    current = env.get(var)
    if current:
        parts.append(current)
    env[var] = os.pathsep.join(dict.fromkeys(parts))  # de-duplicated, order kept


def server_env(install: TritonInstall | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver so its python stubs use the *running* interpreter and venv.

    PATH gets ``dirname(sys.executable)`` first (the embedded interpreter finds the venv through
    ``python3`` on PATH; PYTHONPATH is ignored by the stub). LD_LIBRARY_PATH gets this Python's
    LIBDIR (so the stub loads this libpython, not the system one) and ``nvidia_pytriton.libs`` (the
    copied backend loses its RPATH).
    """
    if install is None:
        with contextlib.suppress(TritonNotFoundError):
            install = find_tritonserver()
    env = dict(os.environ if base is None else base)
    _prepend("PATH", [str(Path(sys.executable).parent)], env)
    libs: list[str | None] = [sysconfig.get_config_var("LIBDIR")]
    if install is not None and install.libs_dir is not None:
        libs.append(str(install.libs_dir))
    _prepend("LD_LIBRARY_PATH", libs, env)
    return env
