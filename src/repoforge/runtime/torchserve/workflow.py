"""Function nodes of the TorchServe workflows repoforge builds from ensembles.

DAG: `rf_request` (root: checks the request's JSON) → the step models (repoforge's handler reads each
input from the parent node the build wired it to) → `rf_response` (collects the ensemble outputs from
the nodes that produce them). TorchServe hands each node its parents' outputs as bytes: under the
parameter `body` for a single parent, under each parent's node name for several.

TorchServe calls every function node once with `data=None` while the workflow registers; the nodes
must return None then (otherwise registration fails with "Workflow ... has failed to register").

Errors: a bad request is answered with HTTP 200 and the error as the body
(`{"code": 400, "type": "BadRequest", "message": ...}`), passed along the DAG from the node that
found it. TorchServe 0.12 workflows do not carry node statuses to the client, and a non-200 status
set by the last node makes the workflow executor hang until its timeout, so none is set here.
"""

from __future__ import annotations

import json
from typing import Any


def _decode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return json.loads(value.decode("utf-8"))
    return value


def request_node(data: list[dict[str, Any]] | None, context: Any, wiring: dict[str, Any]) -> list[str] | None:
    """Parse each request (JSON object with the ensemble's inputs) and pass it on."""
    if data is None:
        return None
    names = wiring["inputs"]
    out = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        try:
            payload = _decode(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if isinstance(payload, dict) and "data" in payload and len(payload) == 1:
            inner = payload["data"]
            payload = inner if isinstance(inner, dict) else ({names[0]: inner} if len(names) == 1 else None)
        if not isinstance(payload, dict):
            out.append(
                json.dumps(
                    {
                        "code": 400,
                        "type": "BadRequest",
                        "message": f"send a JSON object with the inputs {', '.join(names)}",
                    }
                )
            )
            continue
        missing = [n for n in names if n not in payload]
        if missing:
            out.append(
                json.dumps({"code": 400, "type": "BadRequest", "message": f"missing input(s) {', '.join(missing)}"})
            )
            continue
        out.append(json.dumps({n: payload[n] for n in names}))
    return out


def response_node(data: list[dict[str, Any]] | None, context: Any, wiring: dict[str, Any]) -> list[str] | None:
    """Collect the ensemble outputs: output name → (node, key in that node's JSON)."""
    if data is None:
        return None
    parents: list[str] = wiring["response_parents"]
    out = []
    for row in data:
        got: dict[str, Any] = {}
        for key, value in row.items():
            node = key if key in parents else (parents[0] if len(parents) == 1 and key in ("body", "data") else None)
            if node is not None:
                try:
                    got[node] = _decode(value)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    got[node] = None
        result: dict[str, Any] = {}
        error = None
        for name, (node, key) in wiring["outputs"].items():
            part = got.get(node)
            if isinstance(part, dict) and key in part:
                result[name] = part[key]
            elif isinstance(part, dict) and "code" in part and "message" in part:
                error = part
            else:
                error = {
                    "code": 500,
                    "type": "InternalServerError",
                    "message": f"workflow node '{node}' gave no '{key}'",
                }
        out.append(json.dumps(error if error is not None else result))
    return out
