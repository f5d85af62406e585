"""`repoforge build --target torchserve`: the spec → TorchServe model archives (.mar), workflow archives
(.war, for ensembles) and a config.properties, written atomically like the Triton target.

Output layout::

    OUTPUT/
      config.properties          # 127.0.0.1 addresses, model_store, load_models, metrics_mode=prometheus
      model-store/<model>.mar    # one per model: the model file, repoforge's thin handler, model-config.yaml
      wf-store/<ensemble>.war    # one per ensemble: workflow spec + thin function-node handler
      repoforge.lock.json        # sha256 of every file

Everything is checked before anything is written: wrong specs raise SpecError (naming the model),
and eager `pytorch` models are loaded once in-process with torch, so a state_dict that does not match
its class fails the build instead of a TorchServe worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings as pywarnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import yaml

import repoforge.runtime.torchserve.workflow as nodes
from repoforge import __version__, lazy
from repoforge.backends import ship_runtime
from repoforge.errors import BuildError, Problem, SpecError
from repoforge.output import MANIFEST, BuildResult, atomic_dir, check_destination, write_manifest
from repoforge.plan import Device, ModelPlan, RepositoryPlan, detect_device, make_plan
from repoforge.python_requirements import LOCK_KEY, lock_entry, torchserve_model_needs
from repoforge.repo_readme import REPO_README, torchserve_readme
from repoforge.spec.load import LoadedSpec
from repoforge.torchserve import config as tsc
from repoforge.torchserve.build_rules import TORCHSERVE_RULES
from repoforge.torchserve.eager import EagerLoadError, load_eager, split_model_file
from repoforge.torchserve.reproducible import normalize_archive

#: Canonical names of the model file inside an archive (what TorchServe's BaseHandler also understands).
SERIALIZED_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt", "pytorch": "model.pth"}
HANDLER_FILE = "repoforge_handler.py"
WORKFLOW_HANDLER_FILE = "repoforge_workflow.py"
SERVABLE = ("onnx", "torchscript", "pytorch", "python", "ensemble")
# torch-model-archiver's rule for model (and workflow) names.
_TS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


TorchServeBuildResult = BuildResult  # one result type for every target (repoforge.output)


@dataclass
class _Archive:
    """What goes into one .mar, resolved and checked before anything is written."""

    plan: ModelPlan
    version: str
    handler: Path  # handler file to ship (repoforge's or the user's)
    own_handler: bool
    serialized: Path | None = None
    model_file: Path | None = None
    model_class: str | None = None
    extra: list[Path] = field(default_factory=list)


def looks_like_torchserve_output(path: Path) -> bool:
    return (path / "config.properties").is_file() and (path / "model-store").is_dir()


def _resolve(loaded: LoadedSpec, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (loaded.base_dir / p).resolve()


def _name_models(loaded: LoadedSpec, exc: SpecError) -> SpecError:
    """Add the model's name to each problem under `models[i]`, so the message names the model."""
    problems = []
    for p in exc.problems:
        m = re.match(r"^models\[(\d+)\]", p.field)
        if m and int(m.group(1)) < len(loaded.spec.models) and "model '" not in p.message:
            p = Problem(p.location, p.field, f"{p.message} (model '{loaded.spec.models[int(m.group(1))].name}')")
        problems.append(p)
    return SpecError(problems)


def _ours() -> Path:
    return Path(str(resources.files("repoforge.handlers").joinpath(HANDLER_FILE)))


_Bad = Callable[[tuple[Any, ...], str], None]  # reports one located problem of the model being checked


def _check_model(loaded: LoadedSpec, m: ModelPlan, problems: list[Problem], warnings: list[str]) -> _Archive | None:
    """The model's archive, resolved and checked before anything is written; None for an ensemble or a bad format."""
    i, s = m.index, m.spec

    def bad(path: tuple[Any, ...], message: str) -> None:
        problems.append(loaded.problem(path, f"{message} (model '{m.name}')"))

    if not _TS_NAME.match(m.name):
        bad(("models", i, "name"), "TorchServe names must start with a letter or digit")
    if m.format not in SERVABLE:
        bad(
            ("models", i, "format"),
            f"format {m.format} cannot be served by TorchServe (a TensorRT plan needs Triton); "
            "TorchServe serves onnx, torchscript, pytorch, python (with handler:) and ensembles",
        )
        return None
    if m.format == "ensemble":
        return None
    latest = max(m.versions) if m.versions else 1
    src = m.versions.get(latest) if m.versions else None
    arch = _Archive(plan=m, version=str(latest), handler=_ours(), own_handler=False)
    if s.handler:
        _use_own_handler(loaded, m, s.handler, arch, bad)
    if s.plugin is not None:  # the features plugin: repoforge's handler runs repoforge.features, no model file
        return arch
    if s.model_file and m.format != "pytorch":
        warnings.append(f"{m.name}: model_file is only used by format pytorch; left out")
    if m.format == "python":
        _python_handler(m, src, arch, bad, warnings)
        return arch
    if src is None:
        return arch  # the plan reported the missing file already
    arch.serialized = src
    if m.format == "pytorch":
        _check_state_dict(loaded, m, src, arch, bad)
    elif m.format == "torchscript":
        _check_torchscript(m, src, bad)
    return arch


def _use_own_handler(loaded: LoadedSpec, m: ModelPlan, handler: str, arch: _Archive, bad: _Bad) -> None:
    """`handler:` replaces repoforge's handler; it must be an existing .py file (still recorded when it is not)."""
    h = _resolve(loaded, handler)
    if not h.is_file():
        bad(("models", m.index, "handler"), f"handler file '{handler}' not found (looked for {h})")
    elif h.suffix != ".py":
        bad(("models", m.index, "handler"), f"handler '{handler}' must be a .py file")
    arch.handler, arch.own_handler = h, True


def _python_handler(m: ModelPlan, src: Path | None, arch: _Archive, bad: _Bad, warnings: list[str]) -> None:
    """Format python on TorchServe: a Triton model.py cannot run there, so `path` is the handler or ships beside it."""
    if not m.spec.handler:
        if src is not None and src.is_file() and src.suffix == ".py":
            arch.handler, arch.own_handler = src, True
            warnings.append(
                f"{m.name}: format python on TorchServe: '{m.spec.path}' is used as the TorchServe handler "
                "(a Triton TritonPythonModel does not run there; set `handler:` for a separate file)"
            )
        else:
            bad(
                ("models", m.index),
                "format python on TorchServe needs `handler:` (a TorchServe handler file); "
                "`path` is then shipped alongside it",
            )
    elif src is not None:
        arch.extra.append(src)


def _check_state_dict(loaded: LoadedSpec, m: ModelPlan, src: Path, arch: _Archive, bad: _Bad) -> None:
    """Format pytorch: the state_dict needs its nn.Module file, under a free archive name, and must load into it."""
    i, s = m.index, m.spec
    if not s.model_file:
        bad(
            ("models", i),
            "format pytorch needs `model_file:` (the .py file defining the nn.Module class of the state_dict)",
        )
        return
    file, cls = split_model_file(s.model_file)
    mf = _resolve(loaded, file)
    if not mf.is_file():
        bad(("models", i, "model_file"), f"model_file '{file}' not found (looked for {mf})")
        return
    if mf.name in (HANDLER_FILE, arch.handler.name, "model-config.yaml"):
        bad(
            ("models", i, "model_file"),
            f"model_file must not be called {mf.name} (that name is taken in the archive)",
        )
        return
    arch.model_file, arch.model_class = mf, cls
    try:
        lazy.torch()  # only whether torch imports: without it the state_dict cannot be checked
    except ImportError:
        bad(
            ("models", i, "format"),
            "checking a pytorch state_dict needs torch at build time: pip install 'repoforge[torchserve]'",
        )
        return
    try:
        load_eager(mf, src, class_name=cls)
    except EagerLoadError as exc:
        bad(("models", i, "path"), f"cannot load the state_dict: {exc}")


def _check_torchscript(m: ModelPlan, src: Path, bad: _Bad) -> None:
    """Format torchscript: the file must load with torch.jit (checked only where torch is installed)."""
    try:
        torch = lazy.torch()
    except ImportError:
        torch = None
    if torch is not None:
        try:
            with pywarnings.catch_warnings():  # torch 2.13 deprecates TorchScript (DeprecationWarning on load)
                pywarnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.load(str(src), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            bad(
                ("models", m.index, "path"),
                f"'{src.name}' is not a TorchScript file ({first}); save it with torch.jit.save, "
                "or use format: pytorch with model_file for a state_dict",
            )


def _check_ensemble(
    loaded: LoadedSpec, plan: RepositoryPlan, e: ModelPlan, problems: list[Problem], warnings: list[str]
) -> None:
    def bad(path: tuple[Any, ...], message: str) -> None:
        problems.append(loaded.problem(path, f"{message} (ensemble '{e.name}')"))

    seen: set[str] = set()
    for s_i, st in enumerate(e.spec.steps or []):
        where = ("models", e.index, "steps", s_i, "model")
        if st.model in seen:
            bad(where, f"model '{st.model}' is used by two steps; a TorchServe workflow runs each model node once")
        seen.add(st.model)
        if st.model in (tsc.REQUEST_NODE, tsc.RESPONSE_NODE):
            bad(where, f"'{st.model}' is the name of a repoforge workflow node; rename the model")
        target = plan.model(st.model)
        if target.format == "ensemble":
            bad(where, "a TorchServe workflow cannot contain another workflow; list the inner ensemble's steps here")
        elif target.spec.handler or target.format == "python":
            warnings.append(
                f"{e.name}: step model '{st.model}' uses your own handler; in the workflow it receives its "
                "parents' outputs (JSON bytes under 'body', or under each parent's node name)"
            )
        unmapped = [t.name for t in target.inputs if not t.optional and t.name not in st.inputs]
        if target.format != "ensemble" and unmapped:  # its node would get a request without them
            bad(
                ("models", e.index, "steps", s_i, "inputs"),
                f"step {s_i} ({st.model}) does not map its required input '{unmapped[0]}'",
            )
        if st.version != -1:
            warnings.append(
                f"{e.name}: step {s_i} pins version {st.version}; TorchServe workflows use the archived version"
            )


def _archiver(args: list[str], env_tmp: Path, module: str, entry: str) -> None:
    """Run torch-model-archiver / torch-workflow-archiver in a subprocess with a private TMPDIR
    (both stage files in $TMPDIR/<name>, which concurrent builds would share)."""
    code = f"from {module} import {entry}; {entry}()"
    env = {**os.environ, "TMPDIR": str(env_tmp)}
    env_tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if "No module named" in tail:
            raise BuildError(f"{module} is not installed: pip install 'repoforge[torchserve]'\n{tail}")
        raise BuildError(f"{module} failed (exit {proc.returncode}):\n{tail}")


def _write_model(arch: _Archive, stage: Path, store: Path, device: str, workflows: dict[str, Any]) -> Path:
    m = arch.plan
    work = stage / m.name
    work.mkdir(parents=True)
    args = ["--model-name", m.name, "--version", arch.version, "--export-path", str(store), "-f"]
    serialized_name = None
    if arch.serialized is not None:
        serialized_name = SERIALIZED_NAMES.get(m.format, arch.serialized.name)
        shutil.copyfile(arch.serialized, work / serialized_name)
        args += ["--serialized-file", str(work / serialized_name)]
    model_file_entry = None
    if arch.model_file is not None:
        shutil.copyfile(arch.model_file, work / arch.model_file.name)
        args += ["--model-file", str(work / arch.model_file.name)]
        model_file_entry = arch.model_file.name + (f":{arch.model_class}" if arch.model_class else "")
    handler_cfg = tsc.handler_section(
        m, serialized_file=serialized_name, model_file=model_file_entry, workflows=workflows
    )
    cfg = tsc.model_config(m, device, handler_cfg)
    (work / "model-config.yaml").write_text(
        f"# Generated by repoforge for model '{m.name}' ({m.format}).\n" + yaml.safe_dump(cfg, sort_keys=False)
    )
    args += ["--config-file", str(work / "model-config.yaml"), "--handler", str(arch.handler)]
    # The runtime's package goes to the archive root (the archiver copies a folder's contents, so its parent is
    # passed): repoforge's handler (and a user's subclass of it) import it there, not from an installed repoforge.
    ship_runtime(work / "runtime")
    extra: list[str] = [str(work / "runtime")]
    needs = lock_entry({m.name: torchserve_model_needs(m, arch.own_handler)}, {m.name: m.spec.requirements}).get(m.name)
    if needs:  # installed by TorchServe at registration (install_py_dep_per_model=true in config.properties)
        (work / "requirements.txt").write_text("".join(f"{r}\n" for r in needs))
        args += ["--requirements-file", str(work / "requirements.txt")]
    for e in arch.extra:
        if e.is_dir():
            extra.append(str(e))  # the archiver copies a folder's contents into the archive root
        elif e.resolve() != arch.handler.resolve():
            extra.append(str(e))
    if extra:
        args += ["--extra-files", ",".join(extra)]
    _archiver(args, stage / "tmp", "model_archiver.model_packaging", "generate_model_archive")
    mar = store / f"{m.name}.mar"
    if not mar.is_file():
        raise BuildError(f"torch-model-archiver did not write {mar.name}")
    return normalize_archive(mar)


def workflow_handler(wiring: dict[str, Any]) -> str:
    """The single-file function-node handler of a .war: the template with the runtime's node code pasted in (a
    .war cannot carry a package folder) and the ensemble's wiring."""
    template = resources.files("repoforge.handlers").joinpath(WORKFLOW_HANDLER_FILE).read_text()
    code_marker, wiring_marker = "# REPOFORGE_WORKFLOW_CODE\n", "WIRING: dict = {}  # REPOFORGE_WIRING"
    assert code_marker in template and wiring_marker in template
    code = Path(nodes.__file__).read_text(encoding="utf-8").replace("from __future__ import annotations\n", "")
    return template.replace(code_marker, code).replace(wiring_marker, f"WIRING = {json.dumps(wiring, sort_keys=True)}")


def _write_workflow(e: ModelPlan, spec: dict[str, Any], wiring: dict[str, Any], stage: Path, store: Path) -> Path:
    work = stage / f"wf-{e.name}"
    work.mkdir(parents=True)
    spec_file = work / f"{e.name}.yaml"
    spec_file.write_text(f"# Generated by repoforge for ensemble '{e.name}'.\n" + yaml.safe_dump(spec, sort_keys=False))
    handler = work / WORKFLOW_HANDLER_FILE
    handler.write_text(workflow_handler(wiring))
    _archiver(
        [
            "--workflow-name",
            e.name,
            "--spec-file",
            str(spec_file),
            "--handler",
            str(handler),
            "--export-path",
            str(store),
            "-f",
        ],
        stage / "tmp",
        "workflow_archiver.workflow_packaging",
        "generate_workflow_archive",
    )
    war = store / f"{e.name}.war"
    if not war.is_file():
        raise BuildError(f"torch-workflow-archiver did not write {war.name}")
    return normalize_archive(war)


def _version(dist: str) -> str:
    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return "not installed"


def build_torchserve(
    loaded: LoadedSpec,
    output: str | Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    device: Device | None = None,
) -> BuildResult:
    """Check the whole spec for TorchServe, then write the archives and config atomically to `output`.

    Raises SpecError (nothing written) for a wrong spec and BuildError when `output` exists without
    `force` or an archiver fails.
    """
    say = progress or (lambda _m: None)
    out = Path(output)
    device = device or detect_device()
    try:
        plan = make_plan(loaded, device, TORCHSERVE_RULES)
    except SpecError as exc:
        raise _name_models(loaded, exc) from None
    problems: list[Problem] = []
    warnings: list[str] = list(plan.warnings)
    archives: list[_Archive] = []
    for m in plan.models:
        arch = _check_model(loaded, m, problems, warnings)
        if arch is not None:
            archives.append(arch)
            warnings += tsc.unsupported(loaded, m, device, arch.own_handler)
        elif m.format == "ensemble":
            _check_ensemble(loaded, plan, m, problems, warnings)
    if problems:
        raise SpecError(problems)
    check_destination(out, force, looks_like_torchserve_output)
    plan.warnings = warnings
    for w in warnings:
        say(f"warning: {w}")

    ensembles = [m for m in plan.models if m.format == "ensemble"]
    workflow_parts = {e.name: tsc.workflow_spec(e, plan, device) for e in ensembles}
    feeds: dict[str, dict[str, Any]] = {}  # step model → {ensemble: feed}
    for ens, (_, _, step_feeds) in workflow_parts.items():
        for model, feed in step_feeds.items():
            feeds.setdefault(model, {})[ens] = feed

    mars: dict[str, Path] = {}
    wars: dict[str, Path] = {}
    with atomic_dir(out, force) as tmp:
        stage = tmp / ".staging"
        store = tmp / "model-store"
        wf_store = tmp / "wf-store"
        store.mkdir()
        wf_store.mkdir()
        for arch in archives:
            m = arch.plan
            say(
                f"{m.name}: {m.format} → {m.name}.mar ({'your handler ' + arch.handler.name if arch.own_handler else 'repoforge handler'})"
            )
            mar = _write_model(arch, stage, store, device, feeds.get(m.name, {}))
            mars[m.name] = out.resolve() / "model-store" / mar.name
        for e in ensembles:
            spec, wiring, _ = workflow_parts[e.name]
            say(
                f"{e.name}: ensemble → {e.name}.war (TorchServe workflow over {', '.join(st.model for st in e.spec.steps or [])})"
            )
            war = _write_workflow(e, spec, wiring, stage, wf_store)
            wars[e.name] = out.resolve() / "wf-store" / war.name
        requirements = lock_entry(
            {a.plan.name: torchserve_model_needs(a.plan, a.own_handler) for a in archives},
            {a.plan.name: a.plan.spec.requirements for a in archives},
        )
        (tmp / "config.properties").write_text(
            tsc.config_properties(sorted(mars), install_dependencies=bool(requirements))
        )
        (tmp / REPO_README).write_text(torchserve_readme(plan, sorted(mars), sorted(wars)))
        shutil.rmtree(stage, ignore_errors=True)
        manifest = write_manifest(
            tmp,
            {
                "repoforge_version": __version__,
                "target": "torchserve",
                "torchserve": _version("torchserve"),
                "torch_model_archiver": _version("torch-model-archiver"),
                "torch_workflow_archiver": _version("torch-workflow-archiver") if ensembles else None,
                "device": device,
                "repository": plan.name,
                "spec_sha256": plan.spec_sha256,
                "models": sorted(mars),
                "workflows": sorted(wars),
                "warnings": warnings,
                "deploy": plan.deploy,  # read back by `repoforge deploy k8s`
                # per model, what repoforge's handler needs beyond the stock TorchServe image (also the .mar's
                # requirements.txt); deploy and image read it
                LOCK_KEY: requirements,
            },
        )
    files = manifest["files"]
    assert isinstance(files, dict)
    return BuildResult(output=out.resolve(), plan=plan, files=files, target="torchserve", archives=mars, workflows=wars)


__all__ = ["MANIFEST", "TorchServeBuildResult", "build_torchserve", "looks_like_torchserve_output"]
