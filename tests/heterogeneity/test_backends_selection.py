# Copyright 2026 The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The `decoder_backend` forms and the per-layer plan, from configs alone (no TransformerEngine needed)."""

from __future__ import annotations

import pytest

from transformers import GptOssConfig
from transformers.heterogeneity.backends import (
    DecoderBackendError,
    TransformerEngineBackend,
    parse_decoder_backend,
    plan_layer_backends,
    use_decoder_backend,
)
from transformers.heterogeneity.backends.selection import requested_decoder_backend

from .conftest import ARCHS, build_config


def backends(config, value) -> list[str]:
    return [entry.backend for entry in plan_layer_backends(config, parse_decoder_backend(value))]


def test_forms():
    assert parse_decoder_backend(None) is None
    assert parse_decoder_backend("stock") is None
    assert parse_decoder_backend("transformer_engine") == TransformerEngineBackend("all")
    assert parse_decoder_backend({"transformer_engine": [2, 0]}) == TransformerEngineBackend((2, 0))
    assert parse_decoder_backend({"transformer_engine": "fp8_compatible"}).layers == "fp8_compatible"
    choice = TransformerEngineBackend(layers=[1], fp8=True)
    assert parse_decoder_backend(choice) is choice and choice.layers == (1,)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("te", "decoder_backend='te' is not understood"),
        ({"transformer_engine": [0], "fp8": True}, "is not understood"),
        ({"transformer_engine": "fastest"}, "unknown layer rule 'fastest'"),
        ({"transformer_engine": [0.5]}, "a list of integer layer indices, got (0.5,)"),
    ],
)
def test_bad_forms_are_refused(value, message):
    with pytest.raises(DecoderBackendError) as error:
        parse_decoder_backend(value)
    assert message in str(error.value)


def test_plan_by_index_keeps_the_other_layers_stock():
    config = build_config(ARCHS["llama"], None, 4)
    assert backends(config, {"transformer_engine": [0, 3]}) == [
        "transformer_engine",
        "stock",
        "stock",
        "transformer_engine",
    ]
    assert backends(config, "stock") == ["stock"] * 4


@pytest.mark.parametrize(
    ("layers", "message"),
    [([4], "layer 4 is out of range; the model has layers [0, 4)"), ([1, 1], "indices [1, 1] repeat a layer")],
)
def test_plan_refuses_bad_indices(layers, message):
    config = build_config(ARCHS["llama"], None, 4)
    with pytest.raises(DecoderBackendError) as error:
        plan_layer_backends(config, TransformerEngineBackend(layers))
    assert message in str(error.value)


def test_identity_layers_stay_parameter_free():
    config = build_config(ARCHS["llama"], {1: {"skip": ["attention", "mlp"]}}, 3)
    plan = plan_layer_backends(config, TransformerEngineBackend())
    assert [entry.backend for entry in plan] == ["transformer_engine", "identity", "transformer_engine"]


def test_fp8_compatible_rule_and_fp8_refusal():
    # Layer 1's down projection is 64 x 40: 40 is not a multiple of 16, so FP8 cannot run that GEMM.
    config = build_config(ARCHS["llama"], {1: {"intermediate_size": 40}}, 3, intermediate_size=64)
    plan = plan_layer_backends(config, TransformerEngineBackend("fp8_compatible"))
    assert [entry.backend for entry in plan] == ["transformer_engine", "stock", "transformer_engine"]
    assert plan[1].note == "fc2 weight is 64x40, not divisible by 16"
    plan = plan_layer_backends(config, TransformerEngineBackend(fp8=True))
    assert [(entry.backend, entry.fp8, entry.refusal) for entry in plan] == [
        ("transformer_engine", True, None),
        ("transformer_engine", False, "fc2 weight is 64x40, not divisible by 16"),
        ("transformer_engine", True, None),
    ]


def test_mxfp8_alignment_is_32():
    """MXFP8 (TE's default recipe on Blackwell) scales blocks of 32 elements: a width that is a multiple of 16 but not
    of 32 is FP8-compatible for the per-tensor recipes and not for MXFP8."""
    config = build_config(ARCHS["llama"], {1: {"intermediate_size": 48}}, 3, intermediate_size=64)
    assert backends(config, {"transformer_engine": "fp8_compatible"}) == ["transformer_engine"] * 3
    plan = plan_layer_backends(config, TransformerEngineBackend("fp8_compatible"), fp8_alignment=32)
    assert [entry.backend for entry in plan] == ["transformer_engine", "stock", "transformer_engine"]
    assert plan[1].note == "fc2 weight is 64x48, not divisible by 32"
    plan = plan_layer_backends(config, TransformerEngineBackend(fp8=True), fp8_alignment=32)
    assert [entry.refusal for entry in plan] == [None, "fc2 weight is 64x48, not divisible by 32", None]


def test_architecture_without_te_layers_is_refused():
    config = GptOssConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(DecoderBackendError) as error:
        plan_layer_backends(config, TransformerEngineBackend())
    assert "cannot run model_type 'gpt_oss' (layer 0)" in str(error.value)
    assert "['deci', 'llama', 'mistral', 'nemotron-nas', 'qwen2', 'qwen3']" in str(error.value)


def test_context_is_scoped():
    assert requested_decoder_backend() is None
    with use_decoder_backend("transformer_engine") as choice:
        assert requested_decoder_backend() is choice
    assert requested_decoder_backend() is None


def test_inspect_shows_each_layer_backend(tmp_path):
    """`inspect --decoder-backend` plans from config.json alone: no TransformerEngine, no weights."""
    from typer.testing import CliRunner

    from transformers.heterogeneity.commands.cli import app

    per_layer = {1: {"intermediate_size": 40}, 2: {"skip": ["attention", "mlp"]}, 3: {"intermediate_size": 48}}
    config = build_config(ARCHS["llama"], per_layer, 4)
    config.save_pretrained(tmp_path)
    result = CliRunner().invoke(
        app, ["inspect", str(tmp_path), "--decoder-backend", '{"transformer_engine": [0, 1, 2]}', "--fp8"]
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line[:1].isdigit()}
    assert rows["0"].split()[1:3] == ["transformer_engine", "(fp8)"]
    assert "transformer_engine (FP8 refused: fc2 weight is 64x40, not divisible by 16)" in rows["1"]
    assert rows["2"].split()[1] == "identity" and rows["3"].split()[1] == "stock"
    # MXFP8 (TE's default recipe on Blackwell) needs 32: layer 3's width 48 is a multiple of 16, not of 32.
    for alignment, layer_3 in (("16", "transformer_engine"), ("32", "stock")):
        rule = CliRunner().invoke(
            app,
            ["inspect", str(tmp_path), "--decoder-backend", '{"transformer_engine": "fp8_compatible"}']
            + ["--fp8-alignment", alignment],
        )
        assert rule.exit_code == 0, rule.output
        rows = {line.split()[0]: line for line in rule.output.splitlines() if line[:1].isdigit()}
        assert [rows[index].split()[1] for index in "0123"] == ["transformer_engine", "stock", "identity", layer_3]
    plain = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert "backend" not in plain.output and "transformer_engine" not in plain.output
    refused = CliRunner().invoke(app, ["inspect", str(tmp_path), "--decoder-backend", '{"transformer_engine": [9]}'])
    assert refused.exit_code == 1 and "layer 9 is out of range" in refused.output
