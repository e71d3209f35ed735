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
"""The ecosystem on heterogeneous models: pipeline, PEFT, Trainer, accelerate, tensor parallelism, FSDP2, compile.

Each tool runs as its users run it, on a tiny Llama (per-layer FFN width, KV heads, a skipped attention and a
skipped MLP) or Mistral (the same plus per-layer windows). Token and logit references come from
`tests/heterogeneity/reference.py`, which does not import Transformers, or from the same weights run without the tool
(one process, no offload). peft and accelerate are pinned in the `testing` extra of setup.py; they are not optional
here, so a test that needs one fails without it.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModelForCausalLM, CompileConfig, DistributedConfig, GenerationConfig, pipeline
from transformers.heterogeneity.tensor_parallel import TensorParallelError

from .conftest import ARCHS, build_config, build_model, layer_specs, make_input_ids
from .distributed_workers import fsdp_worker, run_on_two_ranks, tensor_parallel_worker, train_steps
from .reference import reference_forward, reference_greedy


NUM_LAYERS = 4
# Every layer differs from the global values (FFN 96, 2 KV heads): an odd FFN width (tensor parallelism splits it
# unevenly), more KV heads, a skipped attention, a skipped MLP. The KV heads divide by 2 for the two-rank tests.
LLAMA_LAYERS = {
    0: {"intermediate_size": 65},
    1: {"num_key_value_heads": 4},
    2: {"skip": ["attention"]},
    3: {"skip": ["mlp"]},
}
# Windows: full, global (4), none (skipped attention), 3; one KV head on layer 1.
MISTRAL_WINDOW = 4
MISTRAL_LAYERS = {
    0: {"sliding_window": None},
    1: {"intermediate_size": 64, "num_key_value_heads": 1},
    2: {"skip": ["attention"]},
    3: {"skip": ["mlp"], "sliding_window": 3},
}
CASES = {
    "llama": (ARCHS["llama"], LLAMA_LAYERS, {}),
    "mistral": (ARCHS["mistral"], MISTRAL_LAYERS, {"sliding_window": MISTRAL_WINDOW}),
}
MAX_NEW_TOKENS = 6


def heterogeneous_model(name: str, seed: int = 0):
    arch, per_layer, global_values = CASES[name]
    return build_model(arch, per_layer, NUM_LAYERS, seed=seed, **global_values)


def reference_specs(name: str):
    arch, per_layer, global_values = CASES[name]
    return layer_specs(arch, per_layer, NUM_LAYERS, **global_values)


def state_of(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids).logits


@pytest.fixture(params=sorted(CASES))
def case(request, single_thread) -> str:
    return request.param


@pytest.fixture(scope="module")
def word_tokenizer():
    """A word-level tokenizer over the models' 100 token ids ("w0" ... "w99"), built locally with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(100)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins the words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0")


def test_text_generation_pipeline_gives_the_reference_greedy_tokens(case, word_tokenizer):
    model = heterogeneous_model(case)
    prompt_ids = make_input_ids(batch_size=1, seq_len=7)
    expected = reference_greedy(state_of(model), reference_specs(case), prompt_ids, MAX_NEW_TOKENS)[0]
    prompt = " ".join(f"w{token}" for token in prompt_ids[0].tolist())

    generator = pipeline("text-generation", model=model, tokenizer=word_tokenizer)
    tokens = generator(prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, return_tensors=True)
    text = generator(prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, return_full_text=False)

    assert tokens[0]["generated_token_ids"] == expected.tolist()
    assert text[0]["generated_text"] == " ".join(f"w{token}" for token in expected[prompt_ids.shape[1] :].tolist())


def test_assisted_and_prompt_lookup_decoding_give_the_reference_greedy_tokens(case):
    model = heterogeneous_model(case)
    arch, _, global_values = CASES[case]
    assistant = build_model(arch, {0: {"skip": ["mlp"]}, 1: {"num_key_value_heads": 1}}, 2, seed=5, **global_values)
    prompt_ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5]])  # repeats, so that prompt lookup finds candidates
    expected = reference_greedy(state_of(model), reference_specs(case), prompt_ids, MAX_NEW_TOKENS)

    greedy = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}
    assert torch.equal(model.generate(prompt_ids, assistant_model=assistant, **greedy), expected)
    assert torch.equal(model.generate(prompt_ids, prompt_lookup_num_tokens=3, **greedy), expected)


def test_sharded_save_round_trip_is_bit_exact(case, tmp_path):
    model = heterogeneous_model(case)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    on_disk = {name: tensor for shard in shards for name, tensor in load_file(shard).items()}
    expected = state_of(model)
    assert on_disk.keys() == expected.keys() and all(torch.equal(on_disk[k], expected[k]) for k in expected)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    input_ids = make_input_ids(seq_len=9)
    assert torch.equal(logits(reloaded, input_ids), logits(model, input_ids))


def merged_lora_state(peft_model, base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base weights with each LoRA update folded in by hand: `W + (alpha / r) * B @ A` (the LoRA paper)."""
    config = peft_model.peft_config["default"]
    scaling = config.lora_alpha / config.r
    parameters = dict(peft_model.named_parameters())
    merged = dict(base_state)
    for name, lora_a in parameters.items():
        if ".lora_A.default." not in name:
            continue
        module = name.removeprefix("base_model.model.").split(".lora_A.")[0]
        lora_b = parameters[name.replace(".lora_A.", ".lora_B.")]
        merged[f"{module}.weight"] = base_state[f"{module}.weight"] + scaling * (lora_b @ lora_a).detach()
    return merged


def test_peft_lora_trains_round_trips_and_merges(single_thread, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = heterogeneous_model("llama")
    base.save_pretrained(tmp_path / "base")
    base_state = state_of(base)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    # LoRA wraps exactly the projections that exist: none in the skipped attention (2) or skipped MLP (3).
    wrapped = {name.split(".lora_A.")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    assert not any(name.startswith("base_model.model.model.layers.2.self_attn.") for name in wrapped)
    assert not any(name.startswith("base_model.model.model.layers.3.mlp.") for name in wrapped)
    assert len(wrapped) == 4 * 3 + 3 * 3  # 4 attention projections in 3 layers, 3 MLP projections in 3 layers

    batch = make_input_ids(batch_size=2, seq_len=8)
    losses = train_steps(model, [batch] * 4, learning_rate=0.05)
    assert losses[-1] < losses[0]
    model.eval()
    input_ids = make_input_ids(seq_len=9, seed=3)
    trained = logits(model, input_ids)
    specs = reference_specs("llama")
    assert not torch.allclose(trained, reference_forward(base_state, specs, input_ids), atol=1e-3)  # it learned
    model.save_pretrained(tmp_path / "adapter")

    fresh_base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", attn_implementation="eager")
    reloaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter").eval()
    assert torch.equal(logits(reloaded, input_ids), trained)

    expected = reference_forward(merged_lora_state(model, base_state), specs, input_ids)
    torch.testing.assert_close(trained, expected, atol=1e-4, rtol=1e-4)
    merged = reloaded.merge_and_unload()
    assert type(merged) is type(base) and not any(".lora_" in name for name in merged.state_dict())
    torch.testing.assert_close(logits(merged, input_ids), trained, atol=1e-5, rtol=1e-5)


def reference_loss_and_gradients(state: dict[str, torch.Tensor], specs, input_ids: torch.Tensor):
    """The causal-LM loss (mean cross-entropy of each next token) of the reference forward, and its gradients."""
    leaves = {name: tensor.clone().requires_grad_(True) for name, tensor in state.items()}
    forward = reference_forward.__wrapped__  # the forward without its `no_grad`
    predicted = forward(leaves, specs, input_ids)[:, :-1]
    loss = torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), input_ids[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {name: leaf.grad for name, leaf in leaves.items()}


def backward_counting_mlp_forwards(model, input_ids: torch.Tensor, monkeypatch) -> int:
    """Runs the causal-LM loss forward and backward; returns how many times an MLP ran its forward."""
    mlp_cls = type(model.model.layers[0].mlp)
    stock_forward = mlp_cls.forward
    calls = []

    def counting_forward(self, x):
        calls.append(self)
        return stock_forward(self, x)

    with monkeypatch.context() as patch:
        patch.setattr(mlp_cls, "forward", counting_forward)
        # No cache in either run (checkpointing turns it off): the same computation, bit for bit
        model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
    return len(calls)


def test_gradient_checkpointing_gives_the_same_gradients(case, monkeypatch):
    input_ids = make_input_ids(batch_size=2, seq_len=9)
    gradients = {}
    for checkpointing in (False, True):
        model = heterogeneous_model(case).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        # 3 layers have an MLP; checkpointing recomputes each layer's forward during the backward
        assert backward_counting_mlp_forwards(model, input_ids, monkeypatch) == (6 if checkpointing else 3)
        gradients[checkpointing] = {name: p.grad for name, p in model.named_parameters()}

    assert gradients[True].keys() == gradients[False].keys()
    assert all(torch.equal(gradients[True][name], gradients[False][name]) for name in gradients[False])
    _, expected = reference_loss_and_gradients(state_of(heterogeneous_model(case)), reference_specs(case), input_ids)
    for name, gradient in gradients[True].items():
        torch.testing.assert_close(gradient, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_trainer_with_gradient_checkpointing_lowers_the_loss(single_thread, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = heterogeneous_model("mistral")
    batch = make_input_ids(batch_size=4, seq_len=9)
    initial_loss, _ = reference_loss_and_gradients(state_of(model), reference_specs("mistral"), batch)
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=5,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        activation_checkpointing=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=[{"input_ids": r, "labels": r} for r in batch])
    trainer.train()

    assert all(layer.gradient_checkpointing for layer in model.model.layers)  # upstream's per-layer flag
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 5
    assert math.isclose(losses[0], initial_loss.item(), rel_tol=1e-4)  # the first step's loss is the reference's
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


@pytest.mark.parametrize("placement", ["explicit_map", "max_memory"])
def test_device_map_split_and_disk_offload_give_the_same_logits(single_thread, tmp_path, placement):
    model = heterogeneous_model("mistral").eval()
    model.save_pretrained(tmp_path / "checkpoint")
    if placement == "explicit_map":
        device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk"}
        device_map |= {f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(NUM_LAYERS)}
        options = {"device_map": device_map}
    else:  # accelerate plans the split: what does not fit in 250 KB of CPU memory (of 389 KB) goes to disk
        options = {"device_map": "auto", "max_memory": {"cpu": "250KB"}}
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "checkpoint", attn_implementation="eager", offload_folder=tmp_path / "offload", **options
    ).eval()

    placements = set(offloaded.hf_device_map.values())
    assert placements == {"cpu", "disk"}, offloaded.hf_device_map
    on_meta = [name for name, parameter in offloaded.named_parameters() if parameter.device.type == "meta"]
    assert on_meta  # the disk-offloaded weights are loaded for each forward only
    input_ids = make_input_ids(seq_len=9)
    assert torch.equal(logits(offloaded, input_ids), logits(model, input_ids))


def test_compile_with_a_static_cache_gives_the_eager_tokens(single_thread):
    """`generate`'s own compilation of the decode step (one graph; a compiled decode step with per-layer windows is
    tested in test_masking_utils.py)."""
    import torch._dynamo

    model = heterogeneous_model("llama")
    prompt_ids = make_input_ids(batch_size=1, seq_len=6)
    expected = reference_greedy(state_of(model), reference_specs("llama"), prompt_ids, 4)
    eager = model.generate(prompt_ids, max_new_tokens=4, do_sample=False, cache_implementation="static")

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # The cheapest backend: dynamo captures the decode step whole (fullgraph: a graph break fails) and runs it as is;
    # AOT autograd on a decode step with per-layer windows is tested in test_masking_utils.py.
    compile_config = CompileConfig(backend="eager", fullgraph=True, mode=None)
    compile_config._compile_all_devices = True  # upstream's switch for compiling on CPU (tests)
    generation_config = GenerationConfig(
        max_new_tokens=4, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    compiled = model.generate(prompt_ids, generation_config=generation_config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decode steps ran compiled
    assert torch.equal(eager, expected) and torch.equal(compiled, expected)


def test_tensor_parallel_refuses_a_layer_whose_heads_do_not_divide(single_thread):
    config = build_config(ARCHS["llama"], {1: {"num_key_value_heads": 1}, 2: {"skip": ["attention"]}}, 3)
    config.distributed_config = DistributedConfig(tp_size=2, tp_plan="auto")  # what from_pretrained sets
    with pytest.raises(TensorParallelError, match=r"Layer 1: `num_key_value_heads`=1 does not divide by the tensor-"):
        ARCHS["llama"].model_cls(config)

    # Skipped attention has no heads to split; an empty plan shards nothing.
    skipped = build_config(ARCHS["llama"], {1: {"num_key_value_heads": 4}, 2: {"skip": ["attention"]}}, 3)
    skipped.distributed_config = DistributedConfig(tp_size=2, tp_plan="auto")
    ARCHS["llama"].model_cls(skipped)
    config.distributed_config = DistributedConfig(tp_size=2, tp_plan={})
    ARCHS["llama"].model_cls(config)
    # Homogeneous models are upstream's: not checked by this package.
    homogeneous = build_config(ARCHS["llama"], None, 2, num_key_value_heads=1)
    homogeneous.distributed_config = DistributedConfig(tp_size=2, tp_plan="auto")
    ARCHS["llama"].model_cls(homogeneous)


def test_tensor_parallel_on_two_processes_gives_the_single_process_logits(tmp_path):
    model = heterogeneous_model("llama").eval()
    model.save_pretrained(tmp_path / "divisible")
    indivisible = {**LLAMA_LAYERS, 1: {"num_key_value_heads": 1}}
    build_model(ARCHS["llama"], indivisible, NUM_LAYERS).save_pretrained(tmp_path / "indivisible")
    input_ids = make_input_ids(seq_len=9)

    ranks = run_on_two_ranks(
        tensor_parallel_worker, tmp_path, tmp_path / "divisible", tmp_path / "indivisible", input_ids
    )
    expected = logits(model, input_ids)
    for rank in ranks:
        assert "error" not in rank, rank.get("error")
        assert rank["weight_type"] == "DTensor"  # really sharded
        torch.testing.assert_close(rank["logits"], expected, atol=1e-5, rtol=1e-5)  # all-reduce order differs
        name, message = rank["refusal"]
        assert name == "TensorParallelError" and message.startswith("Layer 1: `num_key_value_heads`=1 does not")


def test_fsdp2_training_gives_the_single_process_losses(tmp_path):
    heterogeneous_model("llama").save_pretrained(tmp_path / "checkpoint")
    generator = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 100, (4, 8), generator=generator) for _ in range(3)]

    single = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint")
    expected = torch.stack(train_steps(single, batches, learning_rate=0.5))
    ranks = run_on_two_ranks(fsdp_worker, tmp_path, tmp_path / "checkpoint", batches, 0.5)
    for rank in ranks:
        assert "error" not in rank, rank.get("error")
        assert rank["weight_type"] == "DTensor"  # really sharded
        torch.testing.assert_close(rank["losses"], expected, atol=1e-5, rtol=1e-5)
