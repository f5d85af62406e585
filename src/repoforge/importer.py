"""`repoforge import`: an existing Triton model repository → `spec.yaml`, so that `repoforge build` gives the
repository back.

    from repoforge.importer import import_repository
    result = import_repository(Path("model_repository"), Path("spec.yaml"))
    result.kept_raw      # {"model": ["model_operations", ...]}: config fields the spec cannot express
    result.differences   # {"model": [...]}: what does not come back after `repoforge build` (also in warnings)

How it works, per model folder:

1. Every config field the spec can express is mapped to it: the format (from platform/backend, or from
   repoforge's own runner/plugin parameters), the version folders (one `path` when all versions hold the
   same files, else a version → path mapping), batching, instance groups, warmup, optimization, ... Model
   files are referenced where they are (paths relative to the spec) or copied next to the spec.
2. Whatever is left of the config (what the spec cannot express, e.g. `model_operations`, or a warmup
   that mixes data kinds) is written verbatim as the model's `raw_config`, which the build merges into the
   generated config last (protobuf MergeFrom).
3. The spec is then planned exactly as `repoforge build` would plan it. A field that repoforge's stricter
   rules reject (say, dynamic batching on a model with max_batch_size 0) is moved to `raw_config` too, and
   the plan is made again.
4. The configs the spec builds are compared with the originals after `normalize_config` (which removes
   what is purely representational, see there). Every remaining difference is reported in `differences`
   and `warnings`; nothing is dropped silently.

Files outside the version folders (other than label files), extra files next to a non-Python model file,
and models whose backend has no spec format (TensorFlow, OpenVINO, custom backends) are reported, not imported.
A model folder without config.pbtxt is skipped too, unless `server` is given: its effective (auto-completed)
config is then read from a real tritonserver. Differences a client would see are also in `client_visible`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as mc

from repoforge import __version__
from repoforge.backends import model_file as backend_model_file
from repoforge.contract import DRIFT_REFERENCE, MODEL_FILE_PARAMETER, PLUGIN_PARAMETER, RUNNER_PARAMETER, Device
from repoforge.errors import BuildError, Problem, RepoforgeError, SpecError
from repoforge.lint.rules import NON_VERSION_DIRS, Layout, autocomplete
from repoforge.lint.server import effective_configs
from repoforge.output import MANIFEST
from repoforge.plan import make_plan
from repoforge.repo_readme import REPO_README
from repoforge.runtime import RUNNERS
from repoforge.runtime.names import PACKAGE as RUNTIME_PACKAGE
from repoforge.runtime.names import USER_MODEL_FILE
from repoforge.servers.triton import TritonNotFoundError, find_tritonserver
from repoforge.spec import load_spec
from repoforge.torchserve.layout import looks_like_torchserve_output
from repoforge.triton.config import build_config
from repoforge.triton.names import (
    CONFIG,
    FORMATS,
    MODEL_FILENAMES,
    NATIVE_FORMAT,
    RUNNER_FORMAT,
)
from repoforge.triton.reader import model_folders
from repoforge.triton.reverse import (  # re-exported: tests and users compare configs with them
    _REPEATED,
    CLIENT_FIELDS,
    SPEC_ORDER,
    SPEC_TO_CONFIG,
    ConfigMapper,
    _Flow,
    _Ref,
    config_differences,
    normalize_config,
)

COPY_DIR = "models"  # where copy_models puts the model files, next to the spec

# repoforge's CPU runners: runner → (spec format, model file in the version folder)
RUNNER_FORMATS = {r: (f, MODEL_FILENAMES[f]) for r, f in RUNNER_FORMAT.items()}
# Triton backend → spec format, and what a native build of that format writes
NATIVE = {b: (f, FORMATS[f].platform, FORMATS[f].model_file) for b, f in NATIVE_FORMAT.items()}


class ImportFailed(RepoforgeError):
    """The folder is not a Triton model repository that can be imported."""

    exit_code = 2


@dataclass
class ImportResult:
    spec_path: Path
    models: list[str]  # imported, in spec order
    kept_raw: dict[str, list[str]]  # model → config fields kept verbatim in its raw_config
    warnings: list[str]
    device: Device  # build the spec with --device <device> to get the repository back
    differences: dict[str, list[str]] = field(default_factory=dict)  # model → what the rebuilt config changes
    client_visible: dict[str, list[str]] = field(default_factory=dict)  # the differences a client would notice
    skipped: dict[str, str] = field(default_factory=dict)  # model folder → why it was not imported
    builds: bool = True  # False: the spec does not plan yet (problems are in warnings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": str(self.spec_path),
            "device": self.device,
            "models": self.models,
            "kept_raw": self.kept_raw,
            "differences": self.differences,
            "client_visible": self.client_visible,
            "skipped": self.skipped,
            "builds": self.builds,
            "warnings": self.warnings,
        }


# --------------------------------------------------------------------------------------------------------------
# Normalization: what is purely representational
# --------------------------------------------------------------------------------------------------------------
def _files(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every file under folder (Python caches and the runtime copy a repoforge build
    ships, which the next build writes again, left out)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        parts = p.relative_to(folder).parts
        if p.is_file() and "__pycache__" not in parts and parts[0] != RUNTIME_PACKAGE and p.suffix != ".pyc":
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _wrapped_user_model(vdir: Path, files: dict[str, str]) -> bool:
    """A version folder where a repoforge build put its error-counting model.py before the user's renamed model."""
    glue = backend_model_file("user")
    return USER_MODEL_FILE in files and "model.py" in files and (vdir / "model.py").read_bytes() == glue.read_bytes()


class _Model(ConfigMapper):
    """One model folder mapped to a spec entry plus the config fields left over (`rest` → raw_config)."""

    def map(self) -> _Model:
        cfg = self.cfg
        if cfg.name and cfg.name != self.name:
            self.note(
                f"config name '{cfg.name}' differs from its folder; the folder name is used (Triton requires both to match)"
            )
        self.take("name")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name):
            self.skip = "the folder name is not a valid spec model name (letters, digits, _ . - only)"
            return self
        if cfg.max_batch_size < 0:
            self.skip = f"max_batch_size {cfg.max_batch_size} is invalid (Triton refuses this model too)"
            return self
        if not self._format():
            return self
        if not self._versions():
            return self
        mbs = cfg.max_batch_size
        self.spec["max_batch_size"] = mbs
        self.take("max_batch_size")
        if cfg.HasField("version_policy"):
            self._version_policy()
        self._io()
        if self.format == "ensemble":
            self._steps()
        else:
            self._batching(mbs)
            self._instance_groups()
            if cfg.model_warmup:
                self._warmup(mbs)
            if cfg.HasField("optimization"):
                self._optimization()
        self._batch_io()
        self._misc()
        if self.plugin:
            self._drift_reference()
        return self

    def _format(self) -> bool:
        cfg = self.cfg
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        if cfg.platform == "ensemble":
            self.format = "ensemble"
            self.spec["format"] = "ensemble"
            self.take("platform")
            return True
        auto = mc.ModelConfig()
        auto.CopyFrom(cfg)
        problem = autocomplete(auto, self.name, self.dir, Layout.read(self.dir))
        if problem:
            self.skip = problem
            return False
        self.backend = auto.backend
        runner = params.get(RUNNER_PARAMETER)
        if auto.backend == "python" and runner in RUNNER_FORMATS and cfg.platform == "":
            self.format, self.runner = RUNNER_FORMATS[runner][0], runner
            self.spec["format"] = self.format
            self.spec["backend"] = "python"  # repoforge's runner, as asked; without it the build serves it natively
            self.take("backend")
            return True
        if auto.backend == "python":
            self.format = "python"
            self.plugin = bool(runner) and PLUGIN_PARAMETER in params
            self.spec["format"] = "python"
            self.take("backend")  # a platform set next to backend python stays (Triton ignores it): raw_config
            return True
        if auto.backend in NATIVE and not cfg.runtime:
            fmt, platform, _ = NATIVE[auto.backend]
            self.format = fmt
            self.spec["format"] = fmt
            if cfg.platform in ("", platform):
                self.take("platform")
            if cfg.backend in ("", auto.backend):
                self.take("backend")
            return True
        what = f"backend '{auto.backend}'" + (f" (runtime '{cfg.runtime}')" if cfg.runtime else "")
        self.skip = f"{what} has no spec format (onnx, tensorrt, torchscript, python, ensemble)"
        return False

    # -- version folders and model files ---------------------------------------------------------------------
    def _model_filename(self) -> str:
        if self.runner:
            return self.cfg.parameters[MODEL_FILE_PARAMETER].string_value or RUNNER_FORMATS[self.runner][1]
        default = "model.py" if self.format == "python" else NATIVE[self.backend][2]
        return self.cfg.default_model_filename or default

    def _versions(self) -> bool:
        """The spec's versions and model path from the version folders; False (with `skip`) when none holds its file."""
        layout = Layout.read(self.dir)
        self._note_left_out(layout)
        versions = self._spec_versions(layout)
        if self.format == "ensemble" or self.plugin:
            self._written_versions(versions)
            return True
        refs = self._version_refs(versions)
        if not refs:
            self.skip = "no version folder holds its model file"
            return False
        self._model_path(refs)
        return True

    def _note_left_out(self, layout: Layout) -> None:
        """Folders and files beside the version folders have no place in the spec: say so for each."""
        labels = {o.label_filename for o in self.cfg.output if o.label_filename}
        for folder, why in layout.ignored:
            self.note(
                f"folder '{folder}' is not carried over: it is no version folder ({why}) and the spec has no place for it"
            )
        for p in sorted(self.dir.iterdir()):
            if p.is_dir() and p.name in NON_VERSION_DIRS:
                self.note(f"folder '{p.name}' is not carried over: the spec has no place for it")
            elif p.is_file() and p.name != CONFIG and p.name not in labels:
                self.note(f"file '{p.name}' is not carried over: the spec ships only version folders and label files")

    def _spec_versions(self, layout: Layout) -> dict[int, str]:
        """Version → folder, sorted; spec versions start at 1, so folder 0 becomes 1 or (when 1 exists) is left out."""
        versions = dict(sorted(layout.versions.items()))
        if 0 in versions:
            if 1 in versions:
                self.note("version folder 0 is not carried over: spec versions start at 1 and version 1 exists")
                versions.pop(0)
            else:
                self.note("version folder 0 becomes version 1: spec versions start at 1")
                versions[1] = versions.pop(0)
            versions = dict(sorted(versions.items()))
        return versions

    def _written_versions(self, versions: dict[int, str]) -> None:
        """Ensembles and plugins: the build writes their version folders, so only the version numbers carry over."""
        for v, folder in versions.items():
            extra = _files(self.dir / folder)
            extra.pop(".gitkeep", None)
            if self.plugin:
                extra.pop("model.py", None)
            if extra:
                self.note(
                    f"version {v}: files {', '.join(sorted(extra))} are not carried over (the build writes this folder itself)"
                )
        if not versions:
            self.note("has no version folder; the spec builds version 1")
        elif list(versions) != [1]:
            self.spec["versions"] = list(versions)
        if self.plugin:
            self.take("default_model_filename")

    def _drift_reference(self) -> None:
        """A plugin's drift profile was copied into its model folder by the build: the spec points there now
        (the path in the config is the original spec's, relative to a spec that is not here)."""
        drift = (self.spec.get("plugin") or {}).get("drift")
        ref = self.dir / DRIFT_REFERENCE
        if isinstance(drift, dict) and ref.is_file():
            drift["reference"] = _Ref(ref.resolve(), f"{COPY_DIR}/{self.name}/{DRIFT_REFERENCE}")

    def _version_refs(self, versions: dict[int, str]) -> dict[int, tuple[_Ref, str]]:
        """Version → (its model file or python folder, a digest to tell equal versions); versions without it are noted."""
        filename = self._model_filename()
        refs: dict[int, tuple[_Ref, str]] = {}
        for v, folder in versions.items():
            vdir = self.dir / folder
            files = _files(vdir)
            if filename not in files:
                why = "is a folder; the spec takes one model file" if (vdir / filename).is_dir() else "is missing"
                self.note(f"version {v}: {folder}/{filename} {why}; the version is not imported")
                continue
            if self.format == "python":
                if filename == "model.py" and _wrapped_user_model(vdir, files):
                    # a repoforge build's error-counting wrapper: the user's own model.py is the renamed file
                    files = {
                        "model.py": files.pop(USER_MODEL_FILE),
                        **{k: h for k, h in files.items() if k != filename},
                    }
                    if len(files) == 1:
                        refs[v] = (_Ref(vdir / USER_MODEL_FILE, ""), files["model.py"])
                        continue
                if len(files) == 1:
                    refs[v] = (_Ref(vdir / filename, ""), files[filename])
                else:
                    refs[v] = (_Ref(vdir, ""), json.dumps(files, sort_keys=True))
                continue
            others = sorted(set(files) - {filename} - ({"model.py"} if self.runner else set()))
            if others:
                self.note(f"version {v}: {', '.join(others)} are not carried over (a {self.format} model is one file)")
            glue = backend_model_file(self.runner) if self.runner in RUNNERS else None
            if glue and "model.py" in files and (vdir / "model.py").read_bytes() != glue.read_bytes():
                self.note(f"version {v}: model.py differs from repoforge's runner glue; the build writes the glue")
            refs[v] = (_Ref(vdir / filename, ""), files[filename])
        return refs

    def _model_path(self, refs: dict[int, tuple[_Ref, str]]) -> None:
        """default_model_filename dropped where the build names the file; then `path` when every version holds the
        same file, else `versions` with one path each."""
        # A file name of the model's own (mymodel.py) stays in raw_config: the build ships the file (or finds it in
        # the python folder) under the config's default_model_filename. repoforge's runners name their file themselves.
        shipped = "model.py" if self.format == "python" else NATIVE.get(self.backend, ("", "", "model.onnx"))[2]
        own = self.cfg.default_model_filename
        if self.runner and own not in ("", shipped):
            self.note(
                f"default_model_filename '{own}' is not kept: repoforge's {self.runner} runner loads its file itself"
            )
        if self.runner or own in ("", shipped):
            self.take("default_model_filename")
        base = f"{COPY_DIR}/{self.name}"
        if len({digest for _, digest in refs.values()}) == 1:
            ref = next(iter(refs.values()))[0]
            self.spec["path"] = _Ref(ref.src, f"{base}/model" if ref.src.is_dir() else f"{base}/{ref.src.name}")
            if list(refs) != [1]:
                self.spec["versions"] = list(refs)
        else:
            self.spec["versions"] = {
                v: _Ref(r.src, f"{base}/{v}" if r.src.is_dir() else f"{base}/{v}/{r.src.name}")
                for v, (r, _) in refs.items()
            }

    def demote(self, spec_field: str, why: str) -> bool:
        """The plan rejected `spec_field`: keep the config field verbatim in raw_config instead."""
        target = SPEC_TO_CONFIG.get(spec_field)
        if target is None or spec_field not in self.spec:
            return False
        del self.spec[spec_field]
        self.rest.ClearField(target)
        original = getattr(self.cfg, target)
        if isinstance(original, Message):
            if self.cfg.HasField(target):
                getattr(self.rest, target).CopyFrom(original)
        elif hasattr(original, "items"):
            for k, v in original.items():
                if isinstance(v, Message):
                    getattr(self.rest, target)[k].CopyFrom(v)
                else:
                    getattr(self.rest, target)[k] = v
        else:
            getattr(self.rest, target).extend(original)
        if spec_field in ("inputs", "outputs") and self.format in ("python", "tensorrt", "torchscript"):
            self.spec[spec_field] = []  # these formats must declare them; raw_config adds the originals
        if (
            spec_field in ("dynamic_batching", "sequence_batching")
            and self.cfg.max_batch_size > 0
            and self.format != "ensemble"
        ):
            self.spec["dynamic_batching"] = False
        self.note(
            f"`{spec_field}` is left out of the spec, which repoforge's rules reject ({why}); "
            "raw_config keeps what the build does not generate"
        )
        return True

    @property
    def raw_text(self) -> str | None:
        return text_format.MessageToString(self.rest) if self.rest.ListFields() else None

    def raw_fields(self) -> list[str]:
        return _raw_paths(self.cfg, self.rest)

    def entry(self) -> dict[str, Any]:
        spec = dict(self.spec)
        if self.raw_text:
            spec["raw_config"] = self.raw_text
        return {k: spec[k] for k in SPEC_ORDER if k in spec}


def _fix_appended(m: _Model, rebuilt: mc.ModelConfig) -> bool:
    """`rebuilt` = generated + raw_config, and MergeFrom appends repeated fields. When the spec already generates
    the first elements of a list kept raw (an ensemble's outputs derived from its steps, say), raw_config keeps
    only the rest: the elements after the generated prefix, or for inputs/outputs those not generated by name."""
    changed = False
    for fd, value in list(m.rest.ListFields()):
        if fd.label != _REPEATED or (fd.message_type is not None and fd.message_type.GetOptions().map_entry):
            continue
        raw, built, orig = list(value), list(getattr(rebuilt, fd.name)), list(getattr(m.cfg, fd.name))
        generated = built[: len(built) - len(raw)]
        if not generated:
            continue
        if generated == orig[: len(generated)]:
            keep = orig[len(generated) :]
        elif fd.name in ("input", "output"):
            names = {t.name for t in generated}
            keep = [t for t in orig if t.name not in names]
        else:
            continue
        if keep != raw:
            m.rest.ClearField(fd.name)
            getattr(m.rest, fd.name).extend(keep)
            changed = True
    return changed


def _raw_paths(orig: Message, rest: Message, path: str = "") -> list[str]:
    """The fields of `rest`, descending into messages the spec expresses in part (optimization.cuda.graph_spec)."""
    out: list[str] = []
    for fd, value in rest.ListFields():
        p = f"{path}.{fd.name}" if path else fd.name
        partial = (
            fd.message_type is not None
            and fd.label != _REPEATED
            and orig.HasField(fd.name)
            and getattr(orig, fd.name) != value
        )
        out += _raw_paths(getattr(orig, fd.name), value, p) if partial else [p]
    return out


# --------------------------------------------------------------------------------------------------------------
# Reading the repository, writing the spec
# --------------------------------------------------------------------------------------------------------------
NO_CONFIG = (
    f"no {CONFIG}: Triton auto-completes it (e.g. a python model's auto_complete_config), which only a "
    f"server can tell; import with --server bundled to read the effective config from tritonserver, or write "
    f"the {CONFIG}"
)
# What Triton fills into every effective config it reports, with nothing in the model asking for it.
_SERVER_DEFAULT_OPTIMIZATION = text_format.Parse(
    "input_pinned_memory { enable: true } output_pinned_memory { enable: true }", mc.ModelOptimizationPolicy()
)


def _from_server(
    repo: Path,
    names: list[str],
    server: str,
    skipped: dict[str, str],
    warnings: list[str],
) -> list[tuple[str, Path, mc.ModelConfig]]:
    """Model folders without config.pbtxt: their effective configs, read from a real tritonserver."""
    found = []
    for name, cfg in effective_configs(repo, names, server).items():
        if isinstance(cfg, str):
            skipped[name] = f"no {CONFIG}, and {cfg}"
            continue
        if cfg.optimization == _SERVER_DEFAULT_OPTIMIZATION:
            cfg.ClearField("optimization")
        skipped.pop(name, None)
        warnings.append(
            f"{name}: no {CONFIG}: its config is the one tritonserver auto-completed; the build writes it out"
        )
        found.append((name, repo / name, cfg))
    return found


def _read_repository(
    repo: Path,
    root_files: list[str],
    skipped: dict[str, str],
    no_config: list[str],
) -> list[tuple[str, Path, mc.ModelConfig]]:
    """Every model folder's parsed config.pbtxt; folders without one go to `no_config` (and `skipped`)."""
    if not repo.is_dir():
        raise ImportFailed(f"{repo} is not a directory; point import at a Triton model repository")
    found = []
    for f in sorted((p for p in repo.iterdir() if not p.is_dir()), key=lambda p: p.name.encode()):
        # repoforge's own lock file and README are rewritten by the build, not carried
        if f.name != MANIFEST and not (f.name == REPO_README and (repo / MANIFEST).is_file()):
            root_files.append(str(f))  # reported after mapping, unless a model uses it (a label file)
    for d in model_folders(repo):
        if d.name.startswith("."):
            skipped[d.name] = "hidden folder (Triton would fail on it too)"
            continue
        cfg_path = d / CONFIG
        if not cfg_path.is_file():
            skipped[d.name] = NO_CONFIG
            no_config.append(d.name)
            continue
        try:
            cfg = text_format.Parse(cfg_path.read_text(encoding="utf-8"), mc.ModelConfig())
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            skipped[d.name] = f"{CONFIG} does not parse: {exc}"
            continue
        found.append((d.name, d, cfg))
    return found


def _detect_device(repo: Path, configs: list[mc.ModelConfig]) -> Device:
    """The device the repository was made for: repoforge's lock file, else CPU runners, else native serving on
    anything but KIND_CPU instances."""
    try:
        dev = json.loads((repo / MANIFEST).read_text()).get("device")
        if dev in ("cpu", "gpu"):
            return dev
    except (OSError, ValueError, AttributeError):
        pass
    if any(
        RUNNER_PARAMETER in c.parameters and c.parameters[RUNNER_PARAMETER].string_value in RUNNER_FORMATS
        for c in configs
    ):
        return "cpu"  # repoforge's ONNX/TorchScript runners: before issue 21 only --device cpu builds had them
    native = [
        c
        for c in configs
        if c.backend in NATIVE or (not c.backend and c.platform in {p for _, p, _ in NATIVE.values()})
    ]
    if native and not all(
        c.instance_group and all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in c.instance_group) for c in native
    ):
        return "gpu"  # native backends on GPU (or Triton's default kind): a GPU build; all KIND_CPU: a CPU build
    if any(g.kind == mc.ModelInstanceGroup.KIND_GPU for c in configs for g in c.instance_group):
        return "gpu"
    return "cpu"


def _resolve_refs(obj: Any, spec_dir: Path, mode: str) -> Any:
    """Replace every _Ref: `absolute`, `relative` (to the files in place) or `copy` (to the copies)."""
    if isinstance(obj, _Ref):
        if mode == "absolute":
            return str(obj.src)
        if mode == "copy":
            return obj.copy_as
        if os.path.commonpath([obj.src, spec_dir.resolve()]) == obj.src.anchor:  # nothing in common but the root
            return str(obj.src)
        return Path(os.path.relpath(obj.src, spec_dir.resolve())).as_posix()
    if isinstance(obj, dict):
        out = {k: _resolve_refs(v, spec_dir, mode) for k, v in obj.items()}
        return _Flow(out) if isinstance(obj, _Flow) else out
    if isinstance(obj, list):
        return [_resolve_refs(v, spec_dir, mode) for v in obj]
    return obj


def _refs(obj: Any) -> list[_Ref]:
    if isinstance(obj, _Ref):
        return [obj]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _refs(v)]
    return []


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # `- item` indented under its key


def _represent_str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


def _represent_flow(dumper: yaml.SafeDumper, d: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", d.items(), flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Flow, _represent_flow)


def _yaml(doc: dict[str, Any], header: str = "") -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    return header + body.replace("\n  - name:", "\n\n  - name:").replace("models:\n\n", "models:\n")


def _document(repo_name: str, models: list[_Model], spec_dir: Path, mode: str) -> dict[str, Any]:
    return {"version": 1, "repository": repo_name, "models": [_resolve_refs(m.entry(), spec_dir, mode) for m in models]}


@dataclass
class _Attempt:
    configs: dict[str, mc.ModelConfig]
    problems: list[Problem]


def _attempt(repo_name: str, models: list[_Model], device: Device) -> _Attempt:
    """Plan the spec exactly as `repoforge build` does (absolute paths, in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="repoforge-import-") as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(_yaml(_document(repo_name, models, path.parent, "absolute")), encoding="utf-8")
        try:
            plan = make_plan(load_spec(path), device)
        except SpecError as exc:
            return _Attempt({}, exc.problems)
        return _Attempt({mp.name: build_config(mp, device) for mp in plan.models}, [])


_PROBLEM_FIELD = re.compile(r"^models\[(\d+)\](?:\.(\w+))?")


def import_repository(
    repo: str | os.PathLike[str],
    output_spec: str | os.PathLike[str],
    *,
    copy_models: bool = False,
    force: bool = False,
    device: Device | None = None,
    server: str | None = None,
) -> ImportResult:
    """Write `output_spec` describing the Triton model repository `repo`, such that `repoforge build output_spec
    --device <result.device>` gives an equivalent repository back (see the module docstring).

    Model files are referenced where they are (paths relative to the spec), or copied into `models/<model>/`
    next to the spec with `copy_models`. An existing spec is only replaced with `force`. `device` is the
    device the repository is meant for (default: repoforge's lock file, else CPU when it holds repoforge's CPU
    runners, else GPU when it serves ONNX/TensorRT/TorchScript natively or has GPU instance groups, else CPU).
    `server` ("bundled" or a tritonserver binary) reads the effective config of each folder without config.pbtxt
    from a real server (Triton auto-completes those); without it they are skipped, saying so.
    Raises ImportFailed when `repo` holds no readable model, BuildError when the output exists.
    """
    repo_path, out = _check_arguments(repo, output_spec, force, device, server)
    warnings: list[str] = []
    skipped: dict[str, str] = {}
    root_files: list[str] = []
    sources = _sources(repo_path, server, root_files, skipped, warnings)
    device = device or _detect_device(repo_path, [cfg for _, _, cfg in sources])
    models = _map_models(repo_path, sources, device, root_files, skipped, warnings)

    # Plan as the build would; move what repoforge's rules reject into raw_config (or leave the model out).
    models, attempt = _plan_as_built(repo_path, models, device, skipped, warnings)
    builds = not attempt.problems
    if attempt.problems:
        warnings += [f"the spec does not build yet: {p.field}: {p.message}" for p in attempt.problems]

    # Compare what the spec builds with the original configs.
    differences, client_visible = _round_trip(models, attempt, device, warnings)
    for name, why in skipped.items():
        warnings.append(f"{name}: not imported: {why}")

    kept_raw = {m.name: m.raw_fields() for m in models if m.raw_text}
    _write_spec(out, repo_path, models, device, kept_raw, warnings, copy_models, force)
    return ImportResult(
        spec_path=out,
        models=[m.name for m in models],
        kept_raw=kept_raw,
        warnings=warnings,
        device=device,
        differences=differences,
        client_visible=client_visible,
        skipped=skipped,
        builds=builds,
    )


def _check_arguments(
    repo: str | os.PathLike[str],
    output_spec: str | os.PathLike[str],
    force: bool,
    device: Device | None,
    server: str | None,
) -> tuple[Path, Path]:
    """(repository, spec to write), resolved; a bad device, an output in the way or a wrong server fail before any work."""
    if device not in (None, "cpu", "gpu"):
        raise ImportFailed(f"device must be cpu or gpu, got {device!r}")
    repo_path = Path(repo).resolve()
    out = Path(output_spec).absolute()
    if repo_path.is_dir() and looks_like_torchserve_output(repo_path):
        raise ImportFailed(
            f"{repo_path} is a TorchServe build (config.properties and model-store/ of .mar archives), not a Triton "
            "model repository; import reads Triton repositories only. A TorchServe build comes from a spec: build "
            "that spec with --target triton for a Triton repository, or check this build with "
            f"`repoforge validate {repo_path}`"
        )
    if out.is_dir():
        raise BuildError(f"{out} is a directory; give the spec file to write, e.g. {out / 'spec.yaml'}")
    if (out.exists() or out.is_symlink()) and not force:
        raise BuildError(f"{out} already exists; pass --force to replace it")
    if server:  # a wrong binary is caught before anything starts
        try:
            find_tritonserver(None if server == "bundled" else server)
        except TritonNotFoundError as exc:
            raise ImportFailed(f"--server {server}: {exc}") from None
    return repo_path, out


def _sources(
    repo_path: Path, server: str | None, root_files: list[str], skipped: dict[str, str], warnings: list[str]
) -> list[tuple[str, Path, mc.ModelConfig]]:
    """(name, folder, config) of each readable model folder, with the server's config where a folder has none."""
    no_config: list[str] = []
    sources = _read_repository(repo_path, root_files, skipped, no_config)
    if server and no_config:
        sources = sorted(
            sources + _from_server(repo_path, no_config, server, skipped, warnings), key=lambda s: s[0].encode()
        )
    if not sources:
        raise ImportFailed(
            f"{repo_path} has no model folder with a {CONFIG} that can be read"
            + "".join(f"\n  {k}: {v}" for k, v in skipped.items())
        )
    return sources


def _map_models(
    repo_path: Path,
    sources: list[tuple[str, Path, mc.ModelConfig]],
    device: Device,
    root_files: list[str],
    skipped: dict[str, str],
    warnings: list[str],
) -> list[_Model]:
    """Each config mapped to spec fields; models without a spec form are skipped, unused root files noted."""
    models: list[_Model] = []
    for name, model_dir, cfg in sources:
        m = _Model(name, model_dir, cfg, device).map()
        warnings += m.notes
        if m.skip:
            skipped[name] = m.skip
        else:
            models.append(m)
    used = {ref.src for m in models for ref in _refs(m.spec)}
    warnings += [
        f"{Path(f).name}: a file at the repository root is not carried over" for f in root_files if Path(f) not in used
    ]
    if not models:
        raise ImportFailed(
            f"{repo_path}: no model can be imported" + "".join(f"\n  {k}: {v}" for k, v in skipped.items())
        )
    return models


def _plan_as_built(
    repo_path: Path, models: list[_Model], device: Device, skipped: dict[str, str], warnings: list[str]
) -> tuple[list[_Model], _Attempt]:
    """Plan until the spec builds: a field the plan rejects goes to raw_config, else its model is left out."""
    attempt = _attempt(repo_path.name, models, device)
    for _ in range(4 * len(models) + 8):
        # raw_config appends repeated fields after the generated ones: keep only what the generated part lacks
        if not attempt.problems and not [m for m in models if _fix_appended(m, attempt.configs[m.name])]:
            break
        handled = _demote_rejected(models, attempt.problems, skipped, warnings)
        models = [m for m in models if not m.skip]
        if (attempt.problems and not handled) or not models:
            break
        attempt = _attempt(repo_path.name, models, device)
    if not models:
        raise ImportFailed(
            f"{repo_path}: no model can be imported" + "".join(f"\n  {k}: {v}" for k, v in skipped.items())
        )
    return models, attempt


def _demote_rejected(
    models: list[_Model], problems: list[Problem], skipped: dict[str, str], warnings: list[str]
) -> set[tuple[str, str]]:
    """One round: each (model, spec field) the plan rejects is demoted to raw_config or skips its model."""
    handled: set[tuple[str, str]] = set()
    for p in problems:
        hit = _PROBLEM_FIELD.match(p.field)
        if not hit or int(hit.group(1)) >= len(models):
            continue
        m = models[int(hit.group(1))]
        spec_field = hit.group(2) or ""
        if m.skip or (m.name, spec_field) in handled:
            continue
        handled.add((m.name, spec_field))
        if m.demote(spec_field, p.message):
            warnings.append(m.notes[-1])
        else:
            m.skip = f"repoforge cannot build it from the spec: {spec_field or 'model'}: {p.message}"
            skipped[m.name] = m.skip
    return handled


def _round_trip(
    models: list[_Model], attempt: _Attempt, device: Device, warnings: list[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(differences, the client-visible ones) between each original config and what the spec builds."""
    differences: dict[str, list[str]] = {}
    client_visible: dict[str, list[str]] = {}
    for m in models:
        rebuilt = attempt.configs.get(m.name)
        if rebuilt is None:
            continue
        diff = config_differences(
            normalize_config(m.cfg, device, folder=m.name, model_dir=m.dir),
            normalize_config(rebuilt, device, folder=m.name),
        )
        if diff:
            differences[m.name] = diff
            warnings += [f"{m.name}: does not round-trip: {d}" for d in diff]
            seen = [d for d in diff if re.split(r"[.\[:]", d, maxsplit=1)[0] in CLIENT_FIELDS]
            if seen:
                client_visible[m.name] = seen
    return differences, client_visible


def _write_spec(
    out: Path,
    repo_path: Path,
    models: list[_Model],
    device: Device,
    kept_raw: dict[str, list[str]],
    warnings: list[str],
    copy_models: bool,
    force: bool,
) -> None:
    """Copy the model files (when asked), then write the spec atomically; what was written must load."""
    spec_dir = out.parent
    mode = "relative"
    if copy_models:
        _copy_models(models, repo_path, spec_dir, force)
        mode = "copy"
    doc = _document(repo_path.name, models, spec_dir, mode)
    text = _yaml(doc, _header(repo_path, device, kept_raw, warnings, copy_models))
    spec_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec_dir / f".{out.name}.tmp-{os.getpid()}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    load_spec(out)  # what we wrote must load (it does unless there is a bug here)


def _copy_models(models: list[_Model], repo: Path, spec_dir: Path, force: bool) -> None:
    root = (spec_dir / COPY_DIR).resolve()
    if root == repo or repo in root.parents or root in repo.parents:
        raise BuildError(
            f"copying the model files to {root} would write into the repository being imported "
            "(or the other way round); write the spec somewhere else"
        )
    existing = [m.name for m in models if (root / m.name).exists()]
    if existing and not force:
        raise BuildError(f"{root}/{existing[0]} already exists; pass --force to replace the copies in {root}")
    staging = spec_dir / f".{COPY_DIR}.tmp-{os.getpid()}"
    try:
        for m in models:
            for ref in _refs(m.spec):
                dest = staging / ref.copy_as
                dest.parent.mkdir(parents=True, exist_ok=True)
                if ref.src.is_dir():
                    shutil.copytree(
                        ref.src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                elif not dest.exists():
                    shutil.copyfile(ref.src, dest)
        root.mkdir(parents=True, exist_ok=True)
        for m in models:
            if not (staging / COPY_DIR / m.name).exists():
                continue
            if (root / m.name).exists():
                shutil.rmtree(root / m.name)
            (staging / COPY_DIR / m.name).rename(root / m.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _header(repo: Path, device: Device, kept_raw: dict[str, list[str]], warnings: list[str], copied: bool) -> str:
    lines = [
        f"Imported by `repoforge import` (repoforge {__version__}) from the Triton model repository",
        f"  {repo}",
        f"Build it back with: repoforge build <this file> -o <repo> --device {device}",
        "Model paths are relative to this file"
        + (f" (copies in {COPY_DIR}/)." if copied else " (the files in the repository)."),
    ]
    if kept_raw:
        lines.append("raw_config keeps config fields the spec cannot express (merged into the built config last):")
        lines += [f"  {m}: {', '.join(fields)}" for m, fields in kept_raw.items()]
    if warnings:
        lines.append("Notes:")
        lines += [f"  - {w}" for w in warnings]
    return "".join(f"# {' '.join(line.splitlines())}".rstrip() + "\n" for line in lines) + "\n"


__all__ = ["ImportFailed", "ImportResult", "config_differences", "import_repository", "normalize_config"]
