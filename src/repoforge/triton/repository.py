"""Write a RepositoryPlan as a Triton model repository (config.pbtxt + version folders + model files)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path

from repoforge import __version__
from repoforge.backends import model_file as backend_model_file
from repoforge.backends import ship_runtime
from repoforge.errors import BuildError
from repoforge.lint import lint_repository
from repoforge.output import MANIFEST, BuildResult, atomic_dir, check_destination, write_manifest
from repoforge.plan_base import ModelPlan, RepositoryPlan
from repoforge.python_requirements import LOCK_KEY, triton_requirements
from repoforge.repo_readme import REPO_README, triton_readme
from repoforge.runtime.names import PACKAGE as RUNTIME_PACKAGE
from repoforge.runtime.names import USER_MODEL_FILE
from repoforge.triton import execution_env
from repoforge.triton.config import build_config, parse_config, to_text
from repoforge.triton.names import PY_FILE

TRITON_TARGET = "2.51.0"  # the server whose schema (tritonclient's model_config_pb2) the configs are built against


def _write_version(model: ModelPlan, version_dir: Path, src: Path | None, filename: str) -> None:
    version_dir.mkdir(parents=True)
    if src is None:  # ensembles: Triton still needs the (empty) version folder
        return
    if model.format == "python" and src.is_dir():
        shutil.copytree(src, version_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _count_user_errors(model, version_dir, filename)
        return
    shutil.copyfile(src, version_dir / (filename or src.name))
    _count_user_errors(model, version_dir, filename)
    if model.serving.runner:
        (version_dir / "model.py").write_bytes(backend_model_file(model.serving.runner).read_bytes())
        # The runner's code ships beside its model.py (the stub puts the version folder on sys.path), so the
        # stock server image runs this build without repoforge installed.
        ship_runtime(version_dir)


def _count_user_errors(model: ModelPlan, version_dir: Path, filename: str) -> None:
    """A user's Python model (backend python): the file Triton loads (model.py, or raw_config's
    default_model_filename) becomes repoforge_user_model.py and a generated file of the same name serves it
    unchanged, counting the requests it answers with an error, whether returned from `execute` or sent through a
    response sender (decoupled); repoforge's runtime ships beside it."""
    entry = version_dir / (filename or PY_FILE)
    if model.format != "python" or model.serving.runner or model.serving.backend != "python":
        return
    if entry.name == USER_MODEL_FILE or not entry.is_file():
        return
    glue = backend_model_file("user").read_bytes()
    if (version_dir / USER_MODEL_FILE).exists():  # a folder imported from a repoforge build: wrapped already
        if entry.read_bytes() == glue:
            shutil.rmtree(version_dir / RUNTIME_PACKAGE, ignore_errors=True)
            ship_runtime(version_dir)  # this repoforge's runtime, not the one the folder came with
        return
    entry.rename(version_dir / USER_MODEL_FILE)
    entry.write_bytes(glue)
    ship_runtime(version_dir)


def _model_filename(model: ModelPlan, configured: str) -> str:
    """The name a single model file gets in its version folder: the config's default_model_filename (set through
    raw_config, e.g. by `repoforge import` of a repository whose model.py is called mymodel.py), else Triton's
    default for the format. repoforge's runners name their file in a parameter and load model.py themselves."""
    if configured and not model.serving.runner:
        return configured
    return model.model_filename or ""


def _lint_or_refuse(repo: Path, plan: RepositoryPlan) -> None:
    """Run Triton's load-time rules on what was written; an error means Triton would refuse it, so the
    build fails (nothing is moved into place). That is a repoforge bug or a spec case the plan missed."""
    report = lint_repository(repo)
    if report.errors:
        details = "\n".join(str(f).replace(str(repo), "<repo>") for f in report.errors)
        raise BuildError(f"the generated repository breaks Triton's load-time rules (nothing was written):\n{details}")


def looks_like_model_repository(path: Path) -> bool:
    return any(path.glob("*/config.pbtxt"))


def write_repository(
    plan: RepositoryPlan,
    out: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    lock_extra: dict[str, object] | None = None,
    pack_env: bool = False,
) -> BuildResult:
    """Write every model into a temp dir, check each config parses back, then move it into place.
    `lock_extra` adds entries to the lock file's header (e.g. the `optimize:` selection). `pack_env`: each model that
    declares packages gets a custom Python execution environment holding them (execution_env)."""
    say = progress or (lambda _msg: None)
    check_destination(out, force, looks_like_model_repository)
    requirements = triton_requirements(plan)
    envs: dict[str, object] = {}
    with atomic_dir(out, force) as tmp:
        for model in plan.models:
            say(
                f"{model.name}: {model.format} → {model.serving.platform or model.serving.backend}"
                + (f" ({model.serving.runner} runner)" if model.serving.runner else "")
            )
            mdir = tmp / model.name
            mdir.mkdir()
            cfg = build_config(model, plan.device)
            if pack_env and model.name in requirements:
                if execution_env.PARAMETER in cfg.parameters:  # the spec names an env of its own: it is kept
                    say(f"{model.name}: keeps its own {execution_env.PARAMETER}, no env packed")
                else:
                    say(f"{model.name}: packing a Python env with {', '.join(requirements[model.name])}")
                    packed = execution_env.pack(
                        requirements[model.name],
                        mdir / execution_env.ARCHIVE,
                        f"{model.name}/{execution_env.ARCHIVE}",
                    )
                    cfg.parameters[execution_env.PARAMETER].string_value = execution_env.CONFIG_VALUE
                    envs[model.name] = packed.lock()
            text = to_text(cfg)
            parse_config(text)  # the written text must round-trip through Triton's schema
            (mdir / "config.pbtxt").write_text(text)
            for name, extra in sorted(model.extra_files.items()):
                shutil.copyfile(extra, mdir / name)
            filename = _model_filename(model, cfg.default_model_filename)
            for version, src in sorted(model.versions.items()):
                _write_version(model, mdir / str(version), src, filename)
        _lint_or_refuse(tmp, plan)
        (tmp / REPO_README).write_text(triton_readme(plan))  # launch, curl and perf-gate commands
        manifest = write_manifest(
            tmp,
            {
                "repoforge_version": __version__,
                "triton_schema": f"tritonclient {dist_version('tritonclient')}",
                "triton_target": TRITON_TARGET,
                "device": plan.device,
                "repository": plan.name,
                "spec_sha256": plan.spec_sha256,
                "models": sorted(m.name for m in plan.models),
                "deploy": plan.deploy,  # read back by `repoforge deploy k8s`
                **({"rollout": plan.rollout} if plan.rollout is not None else {}),  # deploy k8s: Flagger/Argo
                **({"serving": plan.serving} if plan.serving is not None else {}),  # repoforge gateway: on demand
                **({"gateway": plan.gateway} if plan.gateway else {}),  # gateway:/async:, for gateway, worker, deploy
                # per model, the pip requirements its Python code needs beyond the stock image (deploy, image)
                LOCK_KEY: requirements,
                # build --pack-env: per model, the custom execution environment its config.pbtxt names
                **({execution_env.LOCK_KEY: envs} if envs else {}),
                **(lock_extra or {}),
            },
        )
    files = manifest["files"]
    assert isinstance(files, dict)
    return BuildResult(output=out.resolve(), plan=plan, files=files)


__all__ = ["BuildResult", "MANIFEST", "write_repository", "looks_like_model_repository"]
