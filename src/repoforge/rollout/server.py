"""The live side of a rollout: a running Triton's router (its config, its weights), model loading, and metrics.

Weights change through the router's own weights input (one request): the instance that takes it writes the shared
state file every instance of that router re-reads before each batch, so the next request anywhere uses them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from repoforge.contract import PLUGIN_PARAMETER
from repoforge.rollout.window import RouteCounters, counters
from repoforge.spec.plugins import RouterPlugin, parse_plugin
from repoforge.triton.client import InferenceServerException, TritonClient, config_message
from repoforge.triton.inputs import make_inputs

REQUEST_TIMEOUT_S = 30.0
#: A model name no repository has: unloading it tells whether the server allows unloading at all.
UNLOAD_PROBE = "__repoforge_unload_probe__"


class RolloutInputError(ValueError):
    """Bad input found on the server (unknown model, not a router, candidate not routed): exit 2."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ServerError(RuntimeError):
    """The server refused or did not answer a control request."""


@dataclass
class RouterServer:
    """One router model on one Triton (HTTP `host:port`, metrics `host:port`)."""

    http_url: str
    metrics_url: str
    router: str
    timeout: float = REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        self.plugin = self._router_plugin()
        self.route_names = [t.model for t in self.plugin.targets]

    # -- HTTP (repoforge.triton.client) ----------------------------------------------------------------
    @property
    def client(self) -> TritonClient:
        return TritonClient(self.http_url, f"http://{self.metrics_url}/metrics", self.timeout)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            status, raw = self.client.request(method, path, body if body is not None or method != "POST" else {})
        except (OSError, TimeoutError) as exc:
            raise ServerError(f"{method} http://{self.http_url}{path}: {exc}") from exc
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return status, payload

    def _error(self, payload: Any) -> str:
        return str(payload.get("error", payload)) if isinstance(payload, dict) else str(payload)

    def config(self, model: str) -> dict[str, Any]:
        status, payload = self._request("GET", f"/v2/models/{model}/config")
        if status != 200:
            raise RolloutInputError("--router" if model == self.router else "--candidate", self._model_error(model))
        assert isinstance(payload, dict)
        return payload

    def model_config(self, model: str) -> Any:
        """`config(model)` as Triton's ModelConfig message (what make_inputs and the outputs check read)."""
        return _parsed(self.config(model))

    def _model_error(self, model: str) -> str:
        status, payload = self._request("POST", "/v2/repository/index")
        names = sorted({str(r.get("name")) for r in payload}) if status == 200 and isinstance(payload, list) else []
        known = f"; the server has {', '.join(names)}" if names else ""
        return f"model '{model}' is not loaded on {self.http_url}{known}"

    def _router_plugin(self) -> RouterPlugin:
        cfg = self.config(self.router)
        raw = (cfg.get("parameters") or {}).get(PLUGIN_PARAMETER, {}).get("string_value")
        plugin = parse_plugin(raw) if raw else None
        if not isinstance(plugin, RouterPlugin):
            what = f"a {plugin.kind} plugin" if plugin is not None else "not a repoforge plugin model"
            raise RolloutInputError("--router", f"'{self.router}' is {what}, not a router")
        if not plugin.weights_input:
            raise RolloutInputError(
                "--router", f"router '{self.router}' has weights_input: null, so its weights cannot change at run time"
            )
        self._config = cfg
        return plugin

    # -- models ----------------------------------------------------------------------------------------
    def ready(self, model: str) -> bool:
        try:
            return self._request("GET", f"/v2/models/{model}/ready")[0] == 200
        except ServerError:
            return False

    def load(self, model: str) -> None:
        status, payload = self._request("POST", f"/v2/repository/models/{model}/load")
        if status != 200:
            raise ServerError(f"loading '{model}' failed: {self._error(payload)}")

    def unload_refused(self) -> str | None:
        """None when the server takes load/unload requests (explicit model control), else its refusal. Probed by
        unloading a model name that is not in the repository: explicit mode answers it as a no-op."""
        status, payload = self._request("POST", f"/v2/repository/models/{UNLOAD_PROBE}/unload")
        return None if status == 200 else self._error(payload)

    def unload(self, model: str) -> None:
        status, payload = self._request("POST", f"/v2/repository/models/{model}/unload")
        if status != 200:
            raise ServerError(f"unloading '{model}' failed: {self._error(payload)}")

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One HTTP inference (binary tensors); ServerError with the server's message on failure."""
        try:
            return self.client.infer(model, inputs)
        except InferenceServerException as exc:
            raise ServerError(f"{model}: {exc.message()}") from exc
        except (OSError, TimeoutError) as exc:
            raise ServerError(f"{model}: {exc}") from exc

    # -- weights ---------------------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, float]) -> None:
        """Send the router `weights` (route → share): one request with its weights input and one sample row."""
        cfg = _parsed(self._config)
        wname = self.plugin.weights_input
        assert wname is not None
        feed = make_inputs(cfg, batch_size=1, seed=0)  # the data inputs; the weights input is set below
        vector = np.asarray([[weights.get(n, 0.0) for n in self.route_names]], dtype=np.float32)
        feed[wname] = vector if cfg.max_batch_size > 0 else vector.reshape(-1)
        try:
            self.infer(self.router, feed)
        except ServerError:
            pass  # the weights are taken before the row is routed; a model refusing a random row does not matter
        deadline = time.monotonic() + self.timeout
        total = sum(weights.values()) or 1.0
        while True:
            got = self.weights()
            if all(abs(got.get(n, -1.0) - weights.get(n, 0.0) / total) < 1e-6 for n in self.route_names):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"router '{self.router}' did not take the weights {weights} (it reports {got})")
            time.sleep(0.05)

    def weights(self) -> dict[str, float]:
        """The router's current shares (its `repoforge_router_weight` gauges)."""
        samples = self.scrape()
        out = {}
        for n in self.route_names:
            key = f'repoforge_router_weight{{model="{self.router}",route="{n}"}}'
            if key in samples:
                out[n] = samples[key]
        return out

    # -- metrics ---------------------------------------------------------------------------------------
    def scrape(self) -> dict[str, float]:
        try:
            return self.client.scrape("repoforge_")
        except (OSError, TimeoutError) as exc:
            raise ServerError(f"reading metrics at http://{self.metrics_url}/metrics: {exc}") from exc

    def counters(self, route: str) -> RouteCounters:
        return counters(self.scrape(), self.router, route)


def _parsed(config: dict[str, Any]) -> Any:
    return config_message(config)
