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
"""The generic fixes of the upstream series (`utils/upstream/series/0[1-8]-*`), on configs without `per_layer_config`.

Each test fails on stock Transformers 5.23.0. The cache fixes hold in both homes: the overlay gives every cache its
form of them. The others change what stock Transformers does for classes, configs and models that have nothing
heterogeneous, which the overlay never does by design, so they are `upstream_only`: they run on the patched tree
(`make upstream-check`) and are deselected otherwise (`pyproject.toml`). The fixes of `transformers serve` are shown
on a homogeneous model by `test_serving.py`, whose servers they need.
"""

import json
import subprocess
import sys

import pytest
import torch

from transformers import DynamicCache, NemotronHConfig, Qwen2Config
from transformers.cache_utils import DummyLayer, DynamicLayer


TINY = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 99}


def test_exported_cache_keeps_a_kv_free_layer_before_kv_layers_in_place():
    """Upstream's flattening left the `DummyLayer` out and refilled from layer 0: layer 1's keys came back in layer 0."""
    from transformers.integrations.executorch import register_dynamic_cache_export_support

    register_dynamic_cache_export_support()
    config = NemotronHConfig(  # an MLP block has no KV cache: upstream makes it a `DummyLayer`
        **TINY, layers_block_type=["mlp", "attention", "attention"], head_dim=8, intermediate_size=37,
        mamba_num_heads=4, mamba_head_dim=8, n_groups=2, ssm_state_size=8,
    )  # fmt: skip
    cache = DynamicCache(config=config)
    keys = [torch.full((1, 2, 3, 8), float(value)) for value in (1, 2)]
    cache.update(keys[0], keys[0] + 10, 1)
    cache.update(keys[1], keys[1] + 10, 2)
    values, spec = torch.utils._pytree.tree_flatten(cache)
    restored = torch.utils._pytree.tree_unflatten(values, spec)
    assert [type(layer) for layer in restored.layers] == [DummyLayer, DynamicLayer, DynamicLayer]
    for layer_idx, expected in ((1, keys[0]), (2, keys[1])):
        assert torch.equal(restored.layers[layer_idx].keys, expected)
        assert torch.equal(restored.layers[layer_idx].values, expected + 10)


def test_sliding_layer_without_a_window_gets_a_full_attention_cache():
    """Upstream gave the layer `DynamicSlidingWindowLayer(sliding_window=None)`, which cannot be built."""
    config = Qwen2Config(
        **TINY, num_hidden_layers=2, intermediate_size=37, layer_types=["sliding_attention", "full_attention"],
        sliding_window=None,
    )  # fmt: skip
    assert [type(layer) for layer in DynamicCache(config=config).layers] == [DynamicLayer, DynamicLayer]


@pytest.mark.upstream_only
def test_experts_implementation_of_a_subclass_asked_first_is_its_parents():
    """A GPT-OSS subclass defined elsewhere and asked before its parent answered `False` (its own module has no
    `@use_experts_implementation`), and `True` when the parent was asked first; now always as the parent."""
    code = (
        "import json\n"
        "from transformers import GptOssForCausalLM\n"
        "class Subclass(GptOssForCausalLM):\n"
        "    pass\n"
        "print(json.dumps([Subclass._can_set_experts_implementation(), GptOssForCausalLM._can_set_experts_implementation()]))"
    )
    # In a fresh interpreter: the answers are cached on the classes.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(result.stdout.splitlines()[-1]) == [True, True]


@pytest.mark.upstream_only
def test_auto_class_registers_a_config_of_a_transformers_module_that_is_not_native():
    """Upstream returned without a word for any config class of a `transformers.*` module unless `exist_ok=True`."""
    from transformers import AutoModel, LlamaConfig, LlamaModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    class SubpackageConfig(LlamaConfig):
        model_type = "subpackage-llama"

    class SubpackageModel(LlamaModel):
        config_class = SubpackageConfig

    SubpackageConfig.__module__ = SubpackageModel.__module__ = "transformers.subpackage"
    AutoModel.register(SubpackageConfig, SubpackageModel)
    try:
        assert MODEL_MAPPING[SubpackageConfig] is SubpackageModel
    finally:
        MODEL_MAPPING._extra_content.pop(SubpackageConfig, None)


@pytest.mark.upstream_only
def test_experts_dequantized_on_load_are_saved_under_their_own_names(tmp_path):
    """Upstream saved the float experts of a GPT-OSS loaded with `Mxfp4Config(dequantize=True)` under the MXFP4 names
    (`experts.gate_up_proj_blocks`) without `quantization_config`: the saved model did not load back."""
    from safetensors.torch import load_file, save_file

    from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config

    config = GptOssConfig(
        hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, num_local_experts=2, num_experts_per_tok=1, vocab_size=99,
        quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn",
                             "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, tensor in GptOssForCausalLM(config).state_dict().items():
        if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            tensors[name] = tensor
            continue
        # MXFP4 as gpt-oss releases it: per output row, blocks of 32 fp4 values (16 bytes) and one exponent each.
        experts, columns, rows = tensor.shape
        blocks, scales = (experts, rows, columns // 32, 16), (experts, rows, columns // 32)
        tensors[f"{name}_blocks"] = torch.randint(0, 256, blocks, generator=generator, dtype=torch.uint8)
        tensors[f"{name}_scales"] = torch.randint(122, 128, scales, generator=generator, dtype=torch.uint8)
    source = tmp_path / "mxfp4"
    config.save_pretrained(source)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, source / "model.safetensors")

    loaded = GptOssForCausalLM.from_pretrained(source, quantization_config=Mxfp4Config(dequantize=True))
    loaded.save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert "model.layers.0.mlp.experts.gate_up_proj" in saved
    assert not [name for name in saved if name.endswith(("_blocks", "_scales"))]
    reloaded = GptOssForCausalLM.from_pretrained(tmp_path / "saved")
    for name, parameter in loaded.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], parameter), name
