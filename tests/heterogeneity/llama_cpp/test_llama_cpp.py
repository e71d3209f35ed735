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
"""llama.cpp, an engine nobody here wrote, runs a Nemotron-NAS child exported by this package.

A Llama child with per-layer FFN widths (one padded), KV heads, no-op and linear attention is exported with
`convert --to nemotron-nas`, converted by llama.cpp's own `convert_hf_to_gguf.py`, and evaluated by llama.cpp's CPU library through the pure-Python bindings of the
same llama-cpp-python source distribution. Its logits and greedy tokens are compared with this package's. The same
is done for the kinds the compatibility table says llama.cpp gets wrong or refuses, to show each: a no-op FFN after an
attention (llama.cpp drops the whole layer), a no-op FFN in the last layer (the decode aborts), a linear FFN (the
converter stops). `make llama-cpp-check` runs this; the figures it prints are in docs/source/en/heterogeneity_export.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from ..conftest import randomize_weights


PROMPT = [1, 17, 42, 99, 5, 230, 64, 7]
NEW_TOKENS = 16
TOLERANCE = 1e-4  # fp32 in both; logits are of order 1-10
# Sub-blocks llama.cpp runs: per-layer KV heads (4, 2, 1), widths (layer 5's 600 padded to 768), no-op and linear
# attention.
SUPPORTED = {
    0: {"intermediate_size": 512, "num_key_value_heads": 4},
    1: {"intermediate_size": 768},
    2: {"skip": ["attention"], "intermediate_size": 256},
    3: {"intermediate_size": 1024, "num_key_value_heads": 1},
    4: {"skip": ["attention_replaced_by_linear"]},
    5: {"intermediate_size": 600},
}


def tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-style byte-fallback BPE tokenizer made here (llama.cpp's converter reads its `tokenizer.json` for a
    DeciLM vocabulary): `<unk>`, `<s>`, `</s>`, the 256 byte tokens, and letters."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for piece in ["▁", *"abcdefghijklmnopqrstuvwxyz", *(f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz")]:
        vocab[piece] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_child(path: Path, per_layer: dict, num_layers: int = 6, seed: int = 0) -> torch.nn.Module:
    tok = tokenizer()
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        per_layer_config=per_layer,
    )
    model = randomize_weights(AutoModelForCausalLM.from_config(config), seed=seed).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model


def export_and_convert(child: Path, work: Path) -> subprocess.CompletedProcess:
    """Our export, then llama.cpp's converter (fp32) on it."""
    from transformers.heterogeneity.export import export_checkpoint

    export_checkpoint(child, work / "nas", to="nemotron-nas", progress=lambda line: None)
    source = Path(os.environ["LLAMA_CPP_SOURCE"]) / "vendor" / "llama.cpp"
    # The converter's tokenizer loading (`AutoTokenizer`) reads the model's config too; stock Transformers 5.23 cannot
    # read a nemotron-nas config with llama3 rope (its `PreTrainedConfig` fallback fails on the rope parameters), so
    # this package stays active in the converter's process. The GGUF itself comes from llama.cpp's code.
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
    command = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(work / "nas")]
    command += ["--outtype", "f32", "--outfile", str(work / "model.gguf")]
    return subprocess.run(command, env=env, capture_output=True, text=True)


RUN_LLAMA_CPP = """
import json, sys
import numpy as np
from llama_cpp import Llama
model_path, prompt, new_tokens, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# A float32 KV cache (llama.cpp keeps it in float16 by default): the comparison is of the computation, in fp32.
llm = Llama(model_path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0)
llm.eval(prompt)
np.save(out, np.array(llm.scores[: len(prompt)]))
tokens = []
for _ in range(new_tokens):  # greedy, decoding through llama.cpp's KV cache
    tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    llm.eval([tokens[-1]])
print(json.dumps(tokens))
"""


def run_llama_cpp(gguf: Path, work: Path) -> tuple[subprocess.CompletedProcess, np.ndarray | None, list[int] | None]:
    env = {**os.environ, "PYTHONPATH": os.environ["LLAMA_CPP_SOURCE"]}
    out = work / "logits.npy"
    command = [sys.executable, "-c", RUN_LLAMA_CPP, str(gguf), json.dumps(PROMPT), str(NEW_TOKENS), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return result, None, None
    return result, np.load(out), json.loads(result.stdout.strip().splitlines()[-1])


def ours(model: torch.nn.Module) -> tuple[np.ndarray, list[int]]:
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0].numpy()
    generated = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return logits, generated[0, len(PROMPT) :].tolist()


def test_llama_cpp_matches_an_exported_child(tmp_path):
    build_child(tmp_path / "child", SUPPORTED)
    converted = export_and_convert(tmp_path / "child", tmp_path)
    assert converted.returncode == 0, converted.stderr[-3000:]
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "nas", dtype=torch.float32).eval()
    expected_logits, expected_tokens = ours(exported)
    result, logits, tokens = run_llama_cpp(tmp_path / "model.gguf", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(np.abs(logits - expected_logits).max())
    scale = float(np.abs(expected_logits).max())
    print(f"\nllama.cpp vs transformers-heterogeneity: max |logit diff| {difference:.2e} (max |logit| {scale:.2f}); "
          f"greedy tokens {sum(a == b for a, b in zip(tokens, expected_tokens))}/{NEW_TOKENS} equal")  # fmt: skip
    assert difference < TOLERANCE
    assert tokens == expected_tokens


def test_llama_cpp_drops_the_attention_of_a_layer_whose_ffn_is_no_op(tmp_path):
    """`deci.cpp` skips the rest of a layer whose FFN width is 0 (`if (n_ff == 0) continue;`), after computing its
    attention: the layer returns its input. llama.cpp's logits then equal those of our model with that layer's
    attention removed as well, not those of the exported model."""
    with_attention = {**SUPPORTED, 1: {"skip": ["mlp"]}}
    model = build_child(tmp_path / "child", with_attention)
    assert export_and_convert(tmp_path / "child", tmp_path).returncode == 0
    result, logits, _ = run_llama_cpp(tmp_path / "model.gguf", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    right, _ = ours(AutoModelForCausalLM.from_pretrained(tmp_path / "nas", dtype=torch.float32).eval())

    without_attention = {**SUPPORTED, 1: {"skip": ["attention", "mlp"]}}
    config = LlamaConfig(**{**model.config.to_dict(), "per_layer_config": without_attention})
    identity_layer = AutoModelForCausalLM.from_config(config).eval()
    state = {name: tensor for name, tensor in model.state_dict().items() if "layers.1." not in name}
    identity_layer.load_state_dict(state, strict=True)
    what_llama_cpp_computes, _ = ours(identity_layer)

    wrong, matched = float(np.abs(logits - right).max()), float(np.abs(logits - what_llama_cpp_computes).max())
    print(f"\nno-op FFN after attention: llama.cpp vs the exported model {wrong:.2e}; "
          f"vs the model without layer 1's attention {matched:.2e}")  # fmt: skip
    assert wrong > 1e-2
    assert matched < TOLERANCE


def test_llama_cpp_aborts_when_the_last_layer_has_no_ffn(tmp_path):
    build_child(tmp_path / "child", {**SUPPORTED, 5: {"skip": ["mlp"]}})
    assert export_and_convert(tmp_path / "child", tmp_path).returncode == 0
    result, _, _ = run_llama_cpp(tmp_path / "model.gguf", tmp_path)
    failure = [line for line in result.stderr.splitlines() if "GGML_ASSERT" in line or "error" in line.lower()]
    print(f"\nno-op FFN in the last layer: llama.cpp exits with {result.returncode}: {failure[:2]}")
    assert result.returncode == -6  # SIGABRT: an assertion of ggml, not an error of ours


def test_llama_cpp_converter_refuses_a_linear_ffn(tmp_path):
    build_child(tmp_path / "child", {**SUPPORTED, 1: {"skip": ["mlp_replaced_by_linear"]}})
    converted = export_and_convert(tmp_path / "child", tmp_path)
    print(
        f"\nlinear FFN: convert_hf_to_gguf.py exits with {converted.returncode}: {converted.stderr.splitlines()[-1]}"
    )
    assert converted.returncode != 0
    assert "linear_mlp" in converted.stderr
    assert not (tmp_path / "model.gguf").exists() or (tmp_path / "model.gguf").stat().st_size == 0


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
