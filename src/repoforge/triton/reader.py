"""Read an existing model repository's configs back (for validate, serve and perf)."""

from __future__ import annotations

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


def read_repository(repo: Path) -> list[RepoModel]:
    """Every model folder with a config.pbtxt; a config that does not parse is an error naming file:line:col."""
    if not repo.is_dir():
        raise ServeError(f"{repo} is not a directory; build one with `repoforge build SPEC -o {repo}`")
    models = []
    for cfg_path in sorted(repo.glob("*/config.pbtxt")):
        try:
            cfg = parse_config(cfg_path.read_text())
        except text_format.ParseError as exc:
            raise ServeError(f"{cfg_path}:{exc}") from None
        if not cfg.name:
            cfg.name = cfg_path.parent.name
        models.append(RepoModel(cfg_path.parent.name, cfg_path.parent, cfg))
    if not models:
        raise ServeError(f"{repo} has no model folders with a config.pbtxt")
    return models


def uses_response_cache(models: list[RepoModel]) -> bool:
    return any(m.config.response_cache.enable for m in models)


def is_repoforge_output(repo: Path) -> bool:
    return (repo / MANIFEST).exists()
