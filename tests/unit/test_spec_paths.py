"""Triton's rules are written once (repoforge.lint.rules): lint runs them on a repository's config.pbtxt, the plan
runs them on the config a spec builds and reports them at the spec's file:line through triton.spec_paths."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.lint.locate import Key
from repoforge.lint.rules import ConfigContext, Sink, check_built_config
from repoforge.spec.load import load_spec
from repoforge.triton.names import SPEC_WORDS
from repoforge.triton.spec_paths import spec_path

CONFIG = """
name: "m" backend: "python" max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]
dynamic_batching {
  preserve_ordering: true
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100 }
}
"""


def _messages(words: dict[str, str] | None) -> list[str]:
    sink = Sink("m", "config.pbtxt", words=words)
    check_built_config(sink, text_format.Parse(CONFIG, mc.ModelConfig()), ConfigContext("m", gpu_count=0))
    return sorted(f.message for f in sink.findings if f.severity == "error")


def test_one_rule_reads_in_the_config_words_and_in_the_spec_words() -> None:
    assert _messages(None) == [
        "gpus are only valid with kind KIND_GPU (this group is kind KIND_CPU); remove gpus or set kind KIND_GPU",
        "timeout_action DELAY cannot be combined with preserve_ordering; use REJECT or drop preserve_ordering",
    ]
    assert _messages(SPEC_WORDS) == [
        "gpus are only valid with kind: gpu (this group is kind: cpu); remove gpus or set kind: gpu",
        "timeout_action delay cannot be combined with preserve_ordering; use reject or drop preserve_ordering",
    ]


def test_config_paths_map_to_where_the_spec_writes_them(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\n"
        "defaults: {dynamic_batching: {preferred_batch_sizes: [2, 4]}}\n"
        "models:\n"
        "  - name: m\n"
        "    format: python\n"
        "    path: m.py\n"
        "    inputs: [{name: IN, dtype: FP32, dims: [4]}]\n"
        "    outputs: [{name: OUT, dtype: FP32, dims: [4]}]\n"
        "    warmup: {batch_sizes: [1, 8]}\n"
        "    sequence_batching: {control_inputs: [{name: S, kind: start, dtype: INT32}]}\n",
        encoding="utf-8",
    )
    loaded = load_spec(spec)
    m = loaded.spec.models[0]

    def at(*config_path: object) -> tuple[object, ...]:
        return spec_path(loaded, 0, m, config_path)

    assert at("dynamic_batching", "preferred_batch_size", 1) == (
        "defaults",
        "dynamic_batching",
        "preferred_batch_sizes",
        1,
    )
    assert at("dynamic_batching", "default_queue_policy", "timeout_action") == (
        "defaults", "dynamic_batching", "queue_policy", "timeout_action",
    )  # fmt: skip
    assert at("dynamic_batching", "priority_queue_policy", Key("3")) == (
        "defaults", "dynamic_batching", "priority_queue_policy", 3,
    )  # fmt: skip
    assert at("model_warmup", 1, "batch_size") == ("models", 0, "warmup", "batch_sizes", 1)
    assert at("input", 0, "data_type") == ("models", 0, "inputs", 0, "dtype")
    assert at("input", 3, "name") == ("models", 0)  # not a tensor the spec lists
    assert at("sequence_batching", "control_input", 0, "control", 0, "data_type") == (
        "models", 0, "sequence_batching", "control_inputs", 0, "dtype",
    )  # fmt: skip
    assert at("sequence_batching", "oldest", "preferred_batch_size", 0) == (
        "models", 0, "sequence_batching", "preferred_batch_sizes", 0,
    )  # fmt: skip
    assert at("response_cache") == ("models", 0)  # the spec does not write it
    assert at("parameters", Key("x")) == ("models", 0)
