"""The names a built repository and the code that serves it agree on, in one place.

The build writes them into `config.pbtxt` parameters; the runners and plugins read them inside Triton's
Python backend stub. The keys shared with the servers live in `repoforge.runtime.names` (the runtime imports
nothing of the rest of repoforge); they are re-exported here for build-time code.
"""

from __future__ import annotations

from typing import Literal, get_args

from repoforge.runtime.names import (
    DEFAULT_RUNNER,
    DRIFT_REFERENCE,
    MODEL_FILE_PARAMETER,
    PLUGIN_PARAMETER,
    RUNNER_PARAMETER,
)

Target = Literal["triton", "torchserve"]
"""The serving systems a spec builds for (`repoforge.targets` implements each)."""
TARGET_NAMES: tuple[str, ...] = get_args(Target)

Device = Literal["cpu", "gpu"]
"""Where a build's instances run: cpu (KIND_CPU) or gpu (KIND_GPU and GPU-only settings); both use native backends."""
DEVICE_NAMES: tuple[str, ...] = get_args(Device)

MODEL_LOAD_HEADER = "x-repoforge-model-load"
"""The multiplexing gateway's answer header: `hit` (the model was loaded), `load` (this request loaded it) or `join`
(it waited for a load another request started); `perf --models` splits cold from warm latency by it."""

__all__ = [
    "DEFAULT_RUNNER",
    "MODEL_LOAD_HEADER",
    "DEVICE_NAMES",
    "DRIFT_REFERENCE",
    "MODEL_FILE_PARAMETER",
    "PLUGIN_PARAMETER",
    "RUNNER_PARAMETER",
    "TARGET_NAMES",
    "Device",
    "Target",
]
