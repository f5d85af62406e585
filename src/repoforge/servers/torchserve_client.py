"""The one client of TorchServe's inference, management and metrics REST APIs, apart from starting and stopping
the server (`repoforge.servers.torchserve`): a server repoforge started and one it only reaches use the same calls."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TorchServeAPIError", "TorchServeClient"]


class TorchServeAPIError(RuntimeError):
    """An API call answered with an error status; carries the body and the server's log tail."""

    def __init__(self, message: str, status: int, body: bytes = b"", log_tail: str = "") -> None:
        self.status = status
        self.body = body
        self.log_tail = log_tail
        text = message + (
            f"\n--- last lines of the TorchServe logs ---\n{log_tail}\n--- end of log ---" if log_tail else ""
        )
        super().__init__(text)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class TorchServeClient:
    """TorchServe's three HTTP APIs (base URLs with scheme). `keys` gives the token-auth keys (`inference`,
    `management`, `API`; empty without token auth) and `log_tail` the server's log tail an error carries."""

    def __init__(
        self,
        inference_url: str,
        management_url: str,
        metrics_url: str,
        *,
        keys: Callable[[], dict[str, str]] = dict,
        log_tail: Callable[[], str] = str,
    ) -> None:
        self.inference_url = inference_url
        self.management_url = management_url
        self.metrics_url = metrics_url
        self._keys = keys
        self._log_tail = log_tail

    def url(self, api: str) -> str:
        """The base URL of `api` (`inference`, `management` or `metrics`)."""
        return {"inference": self.inference_url, "management": self.management_url, "metrics": self.metrics_url}[api]

    def auth(self, api: str, key_name: str | None = None) -> dict[str, str]:
        """The header token auth wants on `api` (the metrics API has none; the others each have their own key)."""
        if api == "metrics":
            return {}
        key = self._keys().get(key_name or ("management" if api == "management" else "inference"))
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(
        self,
        method: str,
        api: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP call to the `inference`, `management` or `metrics` API: (status, headers, body)."""
        data: bytes | None
        hdrs = dict(headers or {})
        if body is None:
            data = b"" if method in ("POST", "PUT") else None
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        for k, v in self.auth(api).items():
            hdrs.setdefault(k, v)
        req = urllib.request.Request(self.url(api) + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def _checked(
        self, method: str, api: str, path: str, body: Any = None, timeout: float = 60.0
    ) -> tuple[dict[str, str], bytes]:
        status, headers, payload = self.request(method, api, path, body, timeout=timeout)
        if status != 200:
            raise TorchServeAPIError(
                f"{method} {path} -> HTTP {status}: {payload.decode(errors='replace')[:2000]}",
                status,
                payload,
                self._log_tail(),
            )
        return headers, payload

    def predict(self, model: str, payload: Any, *, version: str | None = None, timeout: float = 60.0) -> Any:
        """POST /predictions/<model>[/<version>] with a JSON payload; returns the decoded JSON answer.
        Raises TorchServeAPIError (with the body and the log tail) for any non-200 answer."""
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        _, body = self._checked("POST", "inference", path, payload, timeout)
        return json.loads(body)

    def wfpredict(self, workflow: str, payload: Any, *, timeout: float = 60.0) -> Any:
        """POST /wfpredict/<workflow> with a JSON payload; returns the decoded JSON answer."""
        _, body = self._checked("POST", "inference", f"/wfpredict/{workflow}", payload, timeout)
        return json.loads(body)

    def describe(self, model: str) -> Any:
        return json.loads(self._checked("GET", "management", f"/models/{model}")[1])

    def list_models(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            path = "/models?limit=100" + (f"&next_page_token={token}" if token else "")
            data = json.loads(self._checked("GET", "management", path)[1])
            names += [m["modelName"] for m in data.get("models", [])]
            token = data.get("nextPageToken")
            if not token:
                return names

    def register_workflow(self, war: str, timeout: float = 120.0) -> None:
        """POST /workflows?url=<war> (in the workflow store); waits for its models' workers."""
        war = war if war.endswith(".war") else f"{war}.war"
        self._checked("POST", "management", f"/workflows?url={war}", timeout=timeout)

    def metrics(self) -> str:
        """GET /metrics on the metrics API (Prometheus text)."""
        return self._checked("GET", "metrics", "/metrics")[1].decode()
