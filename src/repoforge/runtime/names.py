"""The names a built repository, the code that serves it and the tools that read its metrics agree on.

The build writes the parameter names into `config.pbtxt`; the runners and plugins read them inside Triton's
Python backend stub; deploy's alerts and dashboards query the metric names. Renaming one here renames it
everywhere (`repoforge.contract` re-exports the contract keys for build-time code).
"""

from __future__ import annotations

# -- config parameters (config.pbtxt `parameters`) --------------------------------------------------------------
RUNNER_PARAMETER = "repoforge_runner"
"""config parameter: which `RUNNERS` entry serves the model (`onnxruntime`, `router`, ...)."""

MODEL_FILE_PARAMETER = "repoforge_model_file"
"""config parameter: the model file inside the version folder that a runner loads."""

PLUGIN_PARAMETER = "repoforge_plugin"
"""config parameter: a plugin's config as JSON (parsed by `config.parse_plugin_config`)."""


DEFAULT_RUNNER = "onnxruntime"
"""The runner of a generated model that names none."""

DRIFT_REFERENCE = "drift_reference.json"
"""file in a plugin's model folder: the `drift.reference` profile the build copied there."""

USER_MODEL_FILE = "repoforge_user_model.py"
"""A user's Python model (its model.py, renamed) beside the generated model.py that counts its failed requests."""

# -- the shipped copy ---------------------------------------------------------------------------------------------
PACKAGE = "repoforge_runtime"
"""The name this package has inside every build (next to each model.py, and at the root of each .mar)."""

# -- environment variables read inside servers --------------------------------------------------------------------
REDIS_URL_ENV = "REPOFORGE_REDIS_URL"
"""When set in the server's environment, the Redis URL of every plugin that uses Redis (unless its `url_env` is set)."""

STATE_DIR_ENV = "REPOFORGE_STATE_DIR"
"""Folder for state shared by a model's instances (the router's weights); default: the system temp folder."""

# -- metrics (Triton custom metrics through pb_utils.MetricFamily) -------------------------------------------------
MODEL_ERRORS = "repoforge_model_errors_total"
"""Counter{model,version}: requests a Python model of a build answered with an error."""
MODEL_ERRORS_HELP = "Requests this Python model answered with an error"

DRIFT_PSI = "repoforge_drift_psi"
FEATURE_LOOKUPS = "repoforge_feature_lookup_total"
CACHE_REQUESTS = "repoforge_cache_requests_total"
CACHE_LATENCY = "repoforge_cache_latency_us"
CACHE_ENTRIES = "repoforge_cache_entries"
SEMANTIC_CACHE_ROWS = "repoforge_semantic_cache_rows_total"
SEMANTIC_CACHE_ENTRIES = "repoforge_semantic_cache_entries"
ROUTER_ROWS = "repoforge_router_rows_total"
ROUTER_ERRORS = "repoforge_router_errors_total"
ROUTER_LATENCY = "repoforge_router_latency_us"
ROUTER_WEIGHT = "repoforge_router_weight"
SHADOW_ROWS = "repoforge_shadow_rows_total"
SHADOW_BATCHES = "repoforge_shadow_batches_total"
SHADOW_LATENCY = "repoforge_shadow_latency_us"
