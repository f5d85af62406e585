"""Read an existing model repository's configs back (for validate, serve and perf)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.errors import ServeError
from repoforge.output import MANIFEST
from repoforge.triton.config import parse_config


@dataclass
class RepoModel:
    name: str
    path: Path
    config: mc.ModelConfig

    @property
    def versions(self) -> list[int]:
        return sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())

    @property
    def is_ensemble(self) -> bool:
        return self.config.platform == "ensemble"

    @property
    def decoupled(self) -> bool:
        return self.config.model_transaction_policy.decoupled


def model_folders(repo: Path) -> list[Path]:
    """Every sub-folder of `repo` in Triton's order (by the bytes of its name). Triton takes each one for a model,
    hidden ones too; lint, import and validate all start from this list."""
    return sorted((p for p in repo.iterdir() if p.is_dir()), key=lambda p: p.name.encode())


def not_a_repository(path: Path) -> str:
    """Why `path` is no model repository, with the build command that makes one (a folder, never the spec itself)."""
    if path.is_file():
        what = "a spec file" if path.suffix in (".yaml", ".yml") else "a file"
        return (
            f"{path} is {what}, not a model repository; build a repository from it first: "
            f"`repoforge build {path} -o <folder>`, then pass <folder>"
        )
    return f"{path} does not exist; build a model repository there with `repoforge build SPEC.yaml -o {path}`"


def read_repository(repo: Path, *, unconfigured: bool = False) -> list[RepoModel]:
    """Every model folder with a config.pbtxt; a config that does not parse is an error naming file:line:col.
    With `unconfigured`, folders without one are listed too (empty config): Triton auto-completes those, and a
    caller that reads each model's effective config from the server can still check them."""
    if not repo.is_dir():
        raise ServeError(not_a_repository(repo))

    models = []
    folders = [d for d in model_folders(repo) if not d.name.startswith(".")]
    for cfg_path in (d / "config.pbtxt" for d in folders if (d / "config.pbtxt").is_file()):
        try:
            cfg = parse_config(cfg_path.read_text())
        except text_format.ParseError as exc:
            raise ServeError(f"{cfg_path}:{exc}") from None
        if not cfg.name:
            cfg.name = cfg_path.parent.name
        models.append(RepoModel(cfg_path.parent.name, cfg_path.parent, cfg))
    if unconfigured:
        bare = [d for d in folders if not (d / "config.pbtxt").exists()]
        models = sorted(
            models + [RepoModel(d.name, d, mc.ModelConfig(name=d.name)) for d in bare], key=lambda m: m.name
        )
    if not models:
        raise ServeError(f"{repo} has no model folders with a config.pbtxt")
    return models


def rate_limit_flags(repo: Path, models: list[RepoModel]) -> list[str]:
    """tritonserver's rate-limiter flags for this repository: `--rate-limit=execution_count` when an instance group
    declares a `rate_limiter` (Triton's default, `off`, ignores them all), plus one `--rate-limit-resource` per
    resource count the build's `serving.rate_limit_resources` gives (unset: Triton's default, the most that any one
    instance needs)."""
    if not any(g.HasField("rate_limiter") for m in models for g in m.config.instance_group):
        return []
    flags = ["--rate-limit=execution_count"]
    lock = repo / MANIFEST
    serving = json.loads(lock.read_text()).get("serving") if lock.is_file() else None
    for r in (serving or {}).get("rate_limit_resources") or []:
        device = f":{r['device']}" if r.get("device") is not None else ""
        flags.append(f"--rate-limit-resource={r['name']}:{r['count']}{device}")
    return flags


def uses_response_cache(models: list[RepoModel]) -> bool:
    return any(m.config.response_cache.enable for m in models)


def is_repoforge_output(repo: Path) -> bool:
    return (repo / MANIFEST).exists()
