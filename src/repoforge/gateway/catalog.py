"""What the gateway knows about each served model: its inputs (name, dtype, shape), outputs and whether it is
decoupled, read once from Triton over gRPC and kept until the model list changes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from repoforge.gateway.errors import RequestError


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]  # as the model declares it, batch dimension (-1) included when max_batch_size > 0
    optional: bool = False


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    max_batch_size: int
    decoupled: bool


#: How long a negative answer (the model list) is trusted before Triton is asked again.
REFRESH_S = 2.0


class Catalog:
    """Model metadata from Triton, cached: an unknown name re-reads the list at most every REFRESH_S seconds."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._models: dict[str, ModelInfo] = {}
        self._ready: list[str] = []
        self._listed_at = 0.0
        self._lock = asyncio.Lock()

    async def names(self, refresh: bool = False) -> list[str]:
        if refresh or not self._listed_at or time.monotonic() - self._listed_at > REFRESH_S:
            index = await self._client.get_model_repository_index(as_json=True, client_timeout=10)
            self._ready = sorted({m["name"] for m in index.get("models", []) if m.get("state") == "READY"})
            self._listed_at = time.monotonic()
        return self._ready

    async def get(self, name: str) -> ModelInfo:
        """The model's metadata; RequestError 404 naming the served models when `name` is not one."""
        info = self._models.get(name)
        if info is not None:
            return info
        async with self._lock:
            if name in self._models:
                return self._models[name]
            names = await self.names(refresh=True)
            if name not in names:
                raise RequestError(404, f"unknown model '{name}'; served models: {', '.join(names) or 'none'}",
                                   models=names)  # fmt: skip
            info = await self._read(name)
            self._models[name] = info
            return info

    async def _read(self, name: str) -> ModelInfo:
        meta = await self._client.get_model_metadata(name, as_json=True, client_timeout=10)
        config = (await self._client.get_model_config(name, as_json=True, client_timeout=10)).get("config", {})
        optional = {i["name"] for i in config.get("input", []) if i.get("optional")}

        def tensors(rows: list[dict[str, Any]]) -> dict[str, Tensor]:
            return {
                r["name"]: Tensor(
                    r["name"], r["datatype"], tuple(int(d) for d in r.get("shape", [])), r["name"] in optional
                )  # fmt: skip
                for r in rows
            }

        versions = meta.get("versions") or ["1"]
        return ModelInfo(
            name=name,
            version=str(versions[-1]),
            inputs=tensors(meta.get("inputs", [])),
            outputs=tensors(meta.get("outputs", [])),
            max_batch_size=int(config.get("max_batch_size", 0) or 0),
            decoupled=bool(config.get("model_transaction_policy", {}).get("decoupled", False)),
        )
