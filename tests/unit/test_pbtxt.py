"""The runtime's config.pbtxt reader agrees with protobuf's text format on the configs repoforge writes."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.runtime import pbtxt
from repoforge.runtime.plugins.local_model import _triton_json


def _config() -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="m", backend="onnxruntime", max_batch_size=16)
    cfg.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    cfg.input.add(name="id", data_type=mc.TYPE_INT64, dims=[-1, 1])
    cfg.output.add(name="y", data_type=mc.TYPE_FP32, dims=[2])
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=2)
    cfg.dynamic_batching.SetInParent()
    cfg.parameters["repoforge_plugin"].string_value = json.dumps({"kind": "router", "note": 'quote " été \\ \n'})
    cfg.parameters["intra_op_threads"].string_value = "auto"
    return cfg


def test_reads_what_text_format_writes() -> None:
    cfg = _config()
    msg = pbtxt.parse(text_format.MessageToString(cfg))
    assert pbtxt.one(msg, "backend") == "onnxruntime" and pbtxt.one(msg, "max_batch_size") == 16
    assert [pbtxt.one(t, "name") for t in msg["input"]] == ["x", "id"]
    assert msg["input"][1]["dims"] == [-1, 1]
    assert pbtxt.one(msg["instance_group"][0], "kind") == "KIND_CPU"
    assert pbtxt.string_map(msg) == {k: v.string_value for k, v in cfg.parameters.items()}
    assert "dynamic_batching" in msg and "version_policy" not in msg


def test_model_args_json_matches_tritons_own() -> None:
    """What ModelArgs.parse reads from the JSON the in-process route builds equals Triton's JSON of the same config."""
    from repoforge.runtime.triton_model import ModelArgs

    cfg = _config()
    ours = _triton_json(pbtxt.parse(text_format.MessageToString(cfg)), instances=2)
    theirs = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    args = {"model_name": "m", "model_version": "1", "model_repository": "/r/m"}
    a = ModelArgs.parse({**args, "model_config": json.dumps(ours)})
    b = ModelArgs.parse({**args, "model_config": json.dumps(theirs)})
    assert a == b


def test_comments_lists_and_bad_text() -> None:
    msg = pbtxt.parse('# head\nname: "a" # tail\ndims: [1, 2]\nnested < k: 1 >\ns: "x" \'y\'\n')
    assert msg == {"name": ["a"], "dims": [1, 2], "nested": [{"k": [1]}], "s": ["xy"]}
    with pytest.raises(pbtxt.PbtxtError):
        pbtxt.parse("name { a: 1")
