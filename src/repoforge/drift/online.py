"""Drift in the serving path (the implementation runs inside servers: `repoforge.runtime.drift`)."""

from repoforge.runtime.drift import (
    CATEGORICAL_DTYPES,
    FLUSH_ROWS,
    INTERVAL_S,
    METRIC,
    METRIC_HELP,
    MIN_ROWS,
    TEXT_DTYPES,
    DriftMonitor,
    GaugeSink,
    InputInfo,
    Source,
    match_features,
)

__all__ = [
    "CATEGORICAL_DTYPES",
    "FLUSH_ROWS",
    "INTERVAL_S",
    "METRIC",
    "METRIC_HELP",
    "MIN_ROWS",
    "TEXT_DTYPES",
    "DriftMonitor",
    "GaugeSink",
    "InputInfo",
    "Source",
    "match_features",
]
