"""The names a built repository and the code that serves it agree on, in one place.

The build writes them into `config.pbtxt` parameters; the runners and plugins read them inside Triton's
Python backend stub. Renaming one here renames it on both sides.
"""

from __future__ import annotations

from typing import Literal, get_args

RUNNER_PARAMETER = "repoforge_runner"
"""config parameter: which `repoforge.runtime.RUNNERS` entry serves the model (`onnxruntime`, `router`, ...)."""

MODEL_FILE_PARAMETER = "repoforge_model_file"
"""config parameter: the model file inside the version folder that a runner loads."""

PLUGIN_PARAMETER = "repoforge_plugin"
"""config parameter: a plugin's config as JSON (`repoforge.spec.plugins`)."""

DEFAULT_RUNNER = "onnxruntime"
"""The runner of a generated model that names none."""

Target = Literal["triton", "torchserve"]
"""The serving systems a spec builds for (`repoforge.targets` implements each)."""
TARGET_NAMES: tuple[str, ...] = get_args(Target)

Device = Literal["cpu", "gpu"]
"""Where a build's instances run: cpu (KIND_CPU) or gpu (KIND_GPU and GPU-only settings); both use native backends."""
DEVICE_NAMES: tuple[str, ...] = get_args(Device)

DRIFT_REFERENCE = "drift_reference.json"
"""file in a plugin's model folder: the `drift.reference` profile the build copied there (`repoforge.drift.online`)."""
