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
"""Every malformed `per_layer_config` (keys, shape, attribute names, value types) and every malformed per-layer part of
a `config.json` is refused with a `HeterogeneousConfigError` that names what is wrong; nothing is silently dropped,
merged or remapped (`configuration_validation.py`)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, MistralConfig
from transformers.heterogeneity import HeterogeneousConfigError
from transformers.heterogeneity.commands.cli import app

from .checkpoints import write_anymodel_llama_checkpoint, write_nemotron_checkpoint
from .conftest import TINY
from .gpt_oss_checkpoints import write_anymodel_gpt_oss_checkpoint
from .gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle_checkpoint
from .nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle_checkpoint


SCRIPT = Path(sys.executable).parent / "transformers-heterogeneity"


def refused(per_layer_config, config_cls=LlamaConfig, **overrides):
    with pytest.raises(HeterogeneousConfigError) as error:
        config_cls(**{**TINY, **overrides}, per_layer_config=per_layer_config)
    return str(error.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (True, "key True (bool) is not a layer index"),  # int(True) is 1: upstream put it on layer 1
        (False, "key False (bool) is not a layer index"),
        (1.5, "key 1.5 (float) is not a layer index"),  # int(1.5) is 1
        (1.0, "key 1.0 (float) is not a layer index"),
        (None, "key None (NoneType) is not a layer index"),
        (" 1", "key ' 1' (str) is not a layer index"),  # int(" 1") is 1
        ("+1", "key '+1' (str) is not a layer index"),
        ("-0", "key '-0' (str) is not a layer index"),
        ("1.0", "key '1.0' (str) is not a layer index"),
        ("one", "key 'one' (str) is not a layer index"),
        ((1,), "key (1,) (tuple) is not a layer index"),
        (3, "key 3 is out of range: this config has 3 layers, so keys are in [0, 3)"),
        ("-1", "key '-1' is out of range"),
    ],
)
def test_a_key_that_is_not_a_layer_index_is_refused(key, message):
    assert message in refused({key: {"intermediate_size": 64}})


def test_a_key_that_spells_a_layer_index_otherwise_says_how_to_write_it():
    assert refused({"+1": {"intermediate_size": 64}}).endswith("; write layer 1 as 1 or '1'.")


def assert_matches(text, pattern):
    assert re.search(pattern, text), text


@pytest.mark.parametrize("keys", [(1, "1"), ("2", 2), (np.int64(1), "1"), ("1", "01"), (2, "002")])
def test_a_layer_given_twice_is_refused_naming_both_keys(keys):
    message = refused({keys[0]: {"intermediate_size": 64}, keys[1]: {"intermediate_size": 32}})
    assert f"gives layer {int(keys[0])} twice, as {keys[0]!r} and {keys[1]!r}" in message


@pytest.mark.parametrize("key", [1, "1", np.int64(1), "01"])
def test_integer_keys_and_their_decimal_strings_name_the_layer(key):
    config = LlamaConfig(**TINY, per_layer_config={key: {"intermediate_size": 64}})
    assert [layer.intermediate_size for layer in config.per_layer_config] == [128, 64, 128]


def test_a_saved_config_with_zero_padded_keys_loads_back(tmp_path):
    """Upstream writes keys zero-padded to the widest one (`"01"`, `"11"`), so that JSON sorts them by layer."""
    config = LlamaConfig(**{**TINY, "num_hidden_layers": 12}, per_layer_config={1: {"intermediate_size": 64}, 11: {}})
    config.per_layer_config = {1: {"intermediate_size": 64}, 11: {"intermediate_size": 32}}
    config.save_pretrained(tmp_path)
    assert list(json.loads((tmp_path / "config.json").read_text())["per_layer_config"]) == ["01", "11"]
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert [layer.intermediate_size for layer in reloaded.per_layer_config] == [128, 64] + [128] * 9 + [32]


def test_the_setter_refuses_what_the_init_argument_refuses():
    config = LlamaConfig(**TINY)
    with pytest.raises(HeterogeneousConfigError, match="key True"):
        config.per_layer_config = {True: {"intermediate_size": 64}}
    assert not config.is_heterogeneous


@pytest.mark.parametrize(
    "per_layer_config",
    [[{"intermediate_size": 64}], "1: intermediate_size=64", ({"intermediate_size": 64},), 3],
    ids=["list", "string", "tuple", "int"],
)
def test_per_layer_config_that_is_not_a_dict_is_refused(per_layer_config):
    message = refused(per_layer_config)
    assert "`per_layer_config` must be a dict mapping layer indices to dicts of overrides" in message
    assert type(per_layer_config).__name__ in message


@pytest.mark.parametrize("overrides", [None, [("intermediate_size", 64)], "intermediate_size=64", 64])
def test_a_layer_whose_overrides_are_not_a_dict_is_refused(overrides):
    message = refused({1: overrides})
    assert message.startswith(f"Layer 1: the overrides must be a dict of attribute -> value, got {overrides!r}")


def test_an_attribute_name_that_is_not_a_string_is_refused():
    assert refused({1: {3: 64}}) == "Layer 1: attribute names are strings, got 3 (int)."


@pytest.mark.parametrize(
    ("name", "nearest"),
    [("intermediate_sise", "intermediate_size"), ("num_kv_heads", "num_key_value_heads"), ("head_dims", "head_dim")],
)
def test_an_unknown_attribute_is_refused_with_the_nearest_known_name(name, nearest):
    message = refused({1: {name: 64}})
    assert f"Layer 1: unknown attribute `{name}`=64 for LlamaConfig" in message
    assert message.endswith(f"did you mean `{nearest}`?")


def test_an_attribute_unknown_globally_but_given_for_every_layer_is_left_to_the_layers():
    """Upstream accepts an attribute the global config lacks when every layer gives it; the model then refuses it if
    no layer reads it (`modeling_utils`), so nothing is silently ignored either way."""
    config = LlamaConfig(**TINY, per_layer_config={idx: {"made_up": 1} for idx in range(3)})
    with pytest.raises(HeterogeneousConfigError, match="`made_up`=1 is not read by LlamaDecoderLayer"):
        LlamaForCausalLM(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Upstream dropped these as equal to the global value (16 == 16.0, 128 == 128.0, 1 == True).
        ({"head_dim": 16.0}, "Layer 1: `head_dim`=16.0 has type float, but LlamaConfig declares `head_dim` as int"),
        ({"intermediate_size": 128.0}, "`intermediate_size`=128.0 has type float"),
        ({"num_key_value_heads": True}, "`num_key_value_heads`=True has type bool"),
        ({"intermediate_size": None}, "`intermediate_size`=None has type NoneType"),
        ({"intermediate_size": "128"}, "`intermediate_size`='128' has type str"),
        ({"intermediate_size": 32.5}, "`intermediate_size`=32.5 has type float"),
        ({"intermediate_size": True}, "`intermediate_size`=True has type bool"),
        ({"num_attention_heads": 0}, "Layer 1: `num_attention_heads` must be a positive integer, got 0"),
        ({"head_dim": None}, "Layer 1: `head_dim` must be a positive integer, got None"),
        ({"rms_norm_eps": True}, "`rms_norm_eps`=True has type bool"),
        ({"skip": "attention"}, "Layer 1: `skip` must be a list of sub-block names such as \\['attention'\\]"),
        ({"skip": [1]}, "Layer 1: `skip` must be a list of sub-block names"),
        ({"num_attention_heads": 3, "num_key_value_heads": 1}, "Layer 1: The hidden size \\(64\\) is not a multiple"),
    ],
)
def test_a_value_of_the_wrong_type_or_size_is_refused(overrides, message):
    assert_matches(refused({1: overrides}), message)


def test_a_window_of_the_wrong_type_is_refused():
    message = refused({1: {"sliding_window": 1.5}}, MistralConfig)
    assert (
        message
        == "Layer 1: `sliding_window`=1.5 has type float, but MistralConfig declares `sliding_window` as int | None."
    )


def test_the_errors_are_value_errors_of_one_class():
    """Never a `TypeError`, `AttributeError`, `ZeroDivisionError` or `StrictDataclassClassValidationError` (which is no
    `ValueError`): one `except ValueError` catches every refusal."""
    for per_layer_config in (
        [],
        {True: {}},
        {1: None},
        {1: {"num_attention_heads": 0}},
        {1: {"num_attention_heads": 3}},
    ):
        with pytest.raises(ValueError) as error:
            LlamaConfig(**TINY, per_layer_config=per_layer_config)
        assert type(error.value) is HeterogeneousConfigError, repr(error.value)


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text(text)
    return directory


LLAMA_JSON = '{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, %s}'


@pytest.mark.parametrize(
    ("per_layer_config", "message"),
    [
        (
            '"per_layer_config": {"1": {"intermediate_size": 64}, "1": {"intermediate_size": 32}}',
            "`per_layer_config` gives the key '1' more than once in .*config.json; a JSON reader keeps only the last",
        ),
        (
            '"per_layer_config": {"1": {"intermediate_size": 64, "intermediate_size": 32}}',
            "`per_layer_config\\['1'\\]` gives the key 'intermediate_size' more than once",
        ),
        (
            '"per_layer_config": {"1": {"intermediate_size": 64}, "01": {"intermediate_size": 32}}',
            "gives layer 1 twice, as '1' and '01'",
        ),
        (
            '"text_config": {"per_layer_config": {"2": {}, "2": {"intermediate_size": 32}}}',
            "`text_config.per_layer_config` gives the key '2' more than once",
        ),
    ],
    ids=["layer-twice", "attribute-twice", "1-and-01", "in-a-sub-config"],
)
def test_a_config_file_giving_a_key_twice_is_refused(tmp_path, per_layer_config, message):
    directory = write_config(tmp_path / "model", LLAMA_JSON % per_layer_config)
    with pytest.raises(HeterogeneousConfigError) as error:
        AutoConfig.from_pretrained(directory)
    assert_matches(str(error.value), message)


def test_a_block_giving_a_field_twice_is_refused(tmp_path):
    directory = write_nemotron_checkpoint(tmp_path / "nas")
    config = json.loads((directory / "config.json").read_text())
    text = json.dumps(config)
    first_block = json.dumps(config["block_configs"][0])
    duplicated = first_block[:-1] + ', "ffn": {"no_op": true}}'
    (directory / "config.json").write_text(text.replace(first_block, duplicated, 1))
    with pytest.raises(HeterogeneousConfigError, match=r"`block_configs\[0\]` gives the key 'ffn' more than once"):
        AutoConfig.from_pretrained(directory)


BLOCK_FORMATS = {
    "nemotron-nas": (write_nemotron_checkpoint, "nemotron-nas layer 1: `block_configs\\[1\\]` is None"),
    "gpt_oss_puzzle": (write_gpt_oss_puzzle_checkpoint, "gpt_oss_puzzle layer 1: `block_configs\\[1\\]` is None"),
    "nemotron_h_puzzle": (write_nemotron_h_puzzle_checkpoint, "nemotron_h_puzzle block 1: .*a block is a mapping"),
    "anymodel-llama": (
        write_anymodel_llama_checkpoint,
        "llama \\(AnyModel\\) layer 1: a block is a mapping, got None",
    ),
    "anymodel-gpt-oss": (write_anymodel_gpt_oss_checkpoint, "gpt_oss \\(AnyModel\\) layer 1: a block is a mapping"),
}


def edit_config(directory: Path, edit) -> Path:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("name", sorted(BLOCK_FORMATS))
def test_a_null_block_is_refused_naming_the_layer(tmp_path, name):
    write, message = BLOCK_FORMATS[name]
    directory = edit_config(write(tmp_path / name), lambda config: config["block_configs"].__setitem__(1, None))
    with pytest.raises(HeterogeneousConfigError) as error:
        AutoConfig.from_pretrained(directory)
    assert_matches(str(error.value), message)


@pytest.mark.parametrize("name", sorted(BLOCK_FORMATS))
def test_blocks_that_are_not_a_list_are_refused(tmp_path, name):
    directory = edit_config(BLOCK_FORMATS[name][0](tmp_path / name), lambda config: config.update(block_configs="x"))
    with pytest.raises(HeterogeneousConfigError, match="`block_configs` must"):
        AutoConfig.from_pretrained(directory)


@pytest.mark.parametrize("sub_block", ["attention", "ffn"])
def test_an_anymodel_gpt_oss_block_with_a_null_sub_block_is_refused(tmp_path, sub_block):
    """Upstream-shaped AnyModel blocks always hold both sub-blocks; a null one was read as an empty one (the global
    attention, or an MoE error that did not say why)."""
    directory = edit_config(
        write_anymodel_gpt_oss_checkpoint(tmp_path / "anymodel"),
        lambda config: config["block_configs"][1].__setitem__(sub_block, None),
    )
    with pytest.raises(
        HeterogeneousConfigError, match=f"layer 1: `{sub_block}`=None is refused: a GPT-OSS block gives"
    ):
        AutoConfig.from_pretrained(directory)


def test_a_homogeneous_config_file_keeps_upstreams_reading(tmp_path):
    """Duplicate keys outside the per-layer parts are upstream's business: the last one wins, as with `json.loads`."""
    directory = write_config(tmp_path / "model", LLAMA_JSON % '"intermediate_size": 64, "intermediate_size": 32')
    assert AutoConfig.from_pretrained(directory).intermediate_size == 32


@pytest.mark.parametrize("value", ['"3"', "3.0", "null", "true"])
def test_inspect_of_a_config_whose_layer_count_is_not_an_integer_is_one_line(tmp_path, value):
    directory = write_config(
        tmp_path / "model", LLAMA_JSON.replace('"num_hidden_layers": 3', f'"num_hidden_layers": {value}') % '"x": 1'
    )
    result = CliRunner().invoke(app, ["inspect", str(directory)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot inspect {directory}:"), result.output
    assert "num_hidden_layers" in lines[0]


@pytest.mark.overlay_only  # the console script and its distribution are the overlay's
def test_version():
    completed = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    from importlib.metadata import version

    assert completed.stdout == (
        f"transformers-heterogeneity {version('transformers-heterogeneity')} (transformers {version('transformers')}, "
        f"torch {version('torch')})\n"
    )
