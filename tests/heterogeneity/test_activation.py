"""Activation (DESIGN.md contract 1) and homogeneous models left untouched (contract 2)."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

import transformers.heterogeneity as heterogeneity
from transformers import LlamaConfig, LlamaForCausalLM, modeling_utils
from transformers.heterogeneity import HeterogeneousConfigError, SkippedModule
from transformers.integrations.heterogeneity import AmbiguousGlobalPerLayerAttributeError

from .conftest import TINY


HETEROGENEOUS = {1: {"intermediate_size": 32, "num_key_value_heads": 1}, 2: {"skip": ["attention"]}}

BUILD_SCRIPT = """
import json, sys
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(**json.loads(sys.argv[1]))
try:
    model = LlamaForCausalLM(config)
except Exception as error:
    print(json.dumps({"error": type(error).__name__}))
else:
    print(json.dumps({
        "activated": "transformers.heterogeneity" in sys.modules,
        "shapes": {name: list(p.shape) for name, p in model.named_parameters()},
    }))
"""


def run_python(code: str, *args: str, env: dict | None = None) -> str:
    """Runs code in a fresh interpreter, as a user's `python -c` would."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
        timeout=300,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.overlay_only
def test_interpreter_start_imports_neither_torch_nor_transformers():
    loaded = json.loads(run_python("import json, sys; print(json.dumps(sorted(sys.modules)))"))
    assert "transformers_heterogeneity_hook" in loaded, "the .pth hook is not installed"
    assert not [name for name in loaded if name.split(".")[0] in ("torch", "transformers")]


def test_processes_that_do_not_build_models_never_import_the_modeling_code():
    code = "import sys; from transformers import AutoConfig, AutoTokenizer; print('transformers.modeling_utils' in sys.modules)"
    assert run_python(code) == "False"


def test_checkpoint_families_are_registered_without_importing_their_configs():
    """The families are known to `AutoConfig` as soon as it is imported, but their config classes (and the upstream
    configs they subclass) are imported only when a family is looked up."""
    code = (
        "import json, sys\n"
        "from transformers import AutoConfig\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "loaded = lambda: sorted(name for name in sys.modules if name.endswith(('configuration_llama', "
        "'configuration_nemotron_nas', 'configuration_gpt_oss')))\n"
        "before = loaded()\n"
        "registered = 'nemotron-nas' in CONFIG_MAPPING and 'gpt_oss_puzzle' in CONFIG_MAPPING\n"
        "config_class = CONFIG_MAPPING['nemotron-nas']\n"
        "print(json.dumps([before, registered, config_class.__name__, loaded()]))"
    )
    before, registered, config_class, after = json.loads(run_python(code))
    assert (before, registered, config_class) == ([], True, "NemotronNasConfig")
    assert after == [
        "transformers.models.llama.configuration_llama",
        "transformers.models.nemotron_nas.configuration_nemotron_nas",
    ]


# Overlay only: inside Transformers there is no start-up hook to wait for the modeling module, so a heterogeneous
# config imports it (`modeling_utils.after_import`).
@pytest.mark.overlay_only
def test_per_layer_attention_heads_pass_config_validation_before_any_modeling_import():
    """LlamaConfig's own validator reads `num_attention_heads`; it must validate each layer, not the global value."""
    code = (
        "import sys; from transformers import LlamaConfig\n"
        "config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,"
        " per_layer_config={1: {'num_attention_heads': 8, 'head_dim': 8}})\n"
        "print(config.per_layer_config[1].num_attention_heads, 'transformers.modeling_utils' in sys.modules)"
    )
    assert run_python(code) == "8 False"


def test_per_layer_validation_sees_values_set_after_construction():
    """Layer configs are shared between validators of one pass; a value set afterwards must reach the next pass."""
    config = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_hidden_layers=2, per_layer_config={1: {"num_attention_heads": 8}}
    )
    config.validate()
    config.hidden_size = 36  # still a multiple of the 4 global heads, not of layer 1's 8
    with pytest.raises((HeterogeneousConfigError, StrictDataclassClassValidationError)) as error:
        config.validate()
    # The overlay raises the layer's error itself; inside Transformers, `@strict`'s own `validate()` wraps it, as it
    # wraps every validator's error (the error made at construction is the layer's: `__post_init__` runs them first).
    layer_error = error.value if isinstance(error.value, HeterogeneousConfigError) else error.value.__cause__
    assert isinstance(layer_error, HeterogeneousConfigError)
    assert "Layer 1: The hidden size (36) is not a multiple of the number of attention heads (8)" in str(layer_error)


def test_per_layer_validation_checks_every_distinct_layer_config():
    """Validators run once per distinct set of overrides; every set is checked and the error names its first layer."""
    per_layer = {1: {"num_attention_heads": 8}, 2: {"num_attention_heads": 6}, 3: {"num_attention_heads": 6}}
    with pytest.raises(HeterogeneousConfigError) as error:
        LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=4, per_layer_config=per_layer)
    assert "Layer 2: The hidden size (64) is not a multiple of the number of attention heads (6)" in str(error.value)


def test_fresh_process_honours_per_layer_config_without_import():
    config = {**TINY, "per_layer_config": {str(k): v for k, v in HETEROGENEOUS.items()}}
    result = json.loads(run_python(BUILD_SCRIPT, json.dumps(config)))
    assert result["activated"]
    assert result["shapes"]["model.layers.1.mlp.up_proj.weight"] == [32, 64]
    assert result["shapes"]["model.layers.1.self_attn.k_proj.weight"] == [16, 64]
    assert not [name for name in result["shapes"] if name.startswith("model.layers.2.self_attn")]


@pytest.mark.overlay_only
def test_environment_variable_turns_auto_activation_off():
    config = {**TINY, "per_layer_config": {"1": {"intermediate_size": 32}}}
    result = json.loads(
        run_python(BUILD_SCRIPT, json.dumps(config), env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"})
    )
    # Upstream behaviour without the modeling half: the layer's read of the global value is refused.
    assert result == {"error": AmbiguousGlobalPerLayerAttributeError.__name__}


@pytest.mark.overlay_only
def test_explicit_import_activates_when_auto_activation_is_off():
    code = "import transformers.heterogeneity\n" + BUILD_SCRIPT
    config = {**TINY, "per_layer_config": {"1": {"intermediate_size": 32}}}
    result = json.loads(run_python(code, json.dumps(config), env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"}))
    assert result["shapes"]["model.layers.1.mlp.up_proj.weight"] == [32, 64]


@pytest.mark.overlay_only
def test_activation_is_idempotent_and_thread_safe():
    patched_init = modeling_utils.PreTrainedModel.__init__
    threads = [threading.Thread(target=heterogeneity.activate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert modeling_utils.PreTrainedModel.__init__ is patched_init
    assert patched_init.__wrapped__.__qualname__ == "PreTrainedModel.__init__"
    assert not hasattr(patched_init.__wrapped__, "__wrapped__")


@pytest.mark.overlay_only
def test_deactivate_restores_upstream_and_activate_reapplies():
    patched_init = modeling_utils.PreTrainedModel.__init__
    try:
        heterogeneity.deactivate()
        assert not heterogeneity.is_active()
        assert modeling_utils.PreTrainedModel.__init__ is patched_init.__wrapped__
        with pytest.raises(AmbiguousGlobalPerLayerAttributeError):
            LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config={1: {"intermediate_size": 32}}))
    finally:
        heterogeneity.activate()
    assert heterogeneity.is_active()
    LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config={1: {"intermediate_size": 32}}))


@pytest.mark.overlay_only
def test_patches_refuse_an_unexpected_upstream_signature(monkeypatch):
    def get_layer_types_and_kwargs(text_config):  # renamed argument: what a future upstream might ship
        return [], []

    from transformers import cache_utils
    from transformers.heterogeneity import activation

    monkeypatch.setattr(cache_utils, "get_layer_types_and_kwargs", get_layer_types_and_kwargs)
    with pytest.raises(RuntimeError, match=r"cannot patch `cache_utils.get_layer_types_and_kwargs` of transformers"):
        activation.patch_cache_layer_types(cache_utils)


def build_homogeneous(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY))


HOMOGENEOUS_SCRIPT = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(1)  # the same reduction order in both processes
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(**json.loads(sys.argv[1])))
logits = model(torch.tensor([[1, 5, 7, 9, 2]])).logits
print(json.dumps({"repr": repr(model), "logits": logits.flatten().tolist(),
                  "activated": "transformers.heterogeneity" in sys.modules}))
"""


# Overlay only: it compares with a process where the overlay is off. Inside Transformers, upstream's own model tests
# are compared between stock and patched (`utils/upstream/compare_model_tests.py`).
@pytest.mark.overlay_only
def test_homogeneous_model_equals_stock_transformers():
    """A model without per_layer_config is identical, module for module and logit for logit, to the one stock
    Transformers builds in a process where this package is never activated."""
    stock = json.loads(
        run_python(HOMOGENEOUS_SCRIPT, json.dumps(TINY), env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"})
    )
    assert not stock["activated"]
    # Build a heterogeneous model first, so that the layer classes are wrapped in this process.
    LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=HETEROGENEOUS))
    model = build_homogeneous()
    assert repr(model) == stock["repr"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = model(torch.tensor([[1, 5, 7, 9, 2]])).logits.flatten()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(logits, torch.tensor(stock["logits"]))


def test_heterogeneous_models_do_not_leak_into_later_models():
    heterogeneous = LlamaForCausalLM(LlamaConfig(**TINY, per_layer_config=HETEROGENEOUS))
    assert any(isinstance(module, SkippedModule) for module in heterogeneous.modules())
    homogeneous = build_homogeneous()
    assert not any(isinstance(module, SkippedModule) for module in homogeneous.modules())
    assert not [name for name, _ in homogeneous.named_modules() if name.endswith("layers.1.rotary_emb")]
    for layer in homogeneous.model.layers:
        assert layer.mlp.up_proj.weight.shape == (128, 64)
        assert layer.self_attn.config is homogeneous.config


def test_concurrent_constructions_do_not_interfere():
    widths = [16, 32, 48, 64, 80, 96]
    results: dict[int, list] = {}

    def build(width: int) -> None:
        config = LlamaConfig(**TINY, per_layer_config={1: {"intermediate_size": width}})
        model = LlamaForCausalLM(config)
        results[width] = [layer.mlp.up_proj.weight.shape[0] for layer in model.model.layers]

    threads = [threading.Thread(target=build, args=(width,)) for width in widths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {width: [128, width, 128] for width in widths}


def test_native_per_layer_models_are_left_to_upstream():
    """Gemma 4 reads per_layer_config itself: it builds exactly as upstream builds it."""
    from transformers import AutoModelForCausalLM
    from transformers.models.gemma4 import Gemma4TextConfig

    config = Gemma4TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=100,
        per_layer_config={1: {"num_key_value_heads": 2}},
    )
    model = AutoModelForCausalLM.from_config(config)
    assert [layer.self_attn.k_proj.weight.shape[0] for layer in model.model.layers] == [32, 64]
    assert not any(isinstance(module, SkippedModule) for module in model.modules())


LATE_EXPLICIT_SCRIPT = """
import json, sys
from transformers import LlamaConfig, Trainer, AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
registered_before = "nemotron-nas" in CONFIG_MAPPING
import transformers.heterogeneity
from transformers import LlamaForCausalLM
config = LlamaConfig(**json.loads(sys.argv[1]))
model = LlamaForCausalLM(config)
print(json.dumps({"registered_before": registered_before, "registered": "nemotron-nas" in CONFIG_MAPPING,
                  "shapes": {name: list(p.shape) for name, p in model.named_parameters()}}))
"""


@pytest.mark.overlay_only
def test_explicit_import_after_other_transformers_imports_activates_everything():
    config = {**TINY, "per_layer_config": {str(k): v for k, v in HETEROGENEOUS.items()}}
    result = json.loads(
        run_python(LATE_EXPLICIT_SCRIPT, json.dumps(config), env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"})
    )
    assert (result["registered_before"], result["registered"]) == (False, True)
    assert result["shapes"]["model.layers.1.mlp.up_proj.weight"] == [32, 64]
    assert not [name for name in result["shapes"] if name.startswith("model.layers.2.self_attn")]


THREADED_FIRST_IMPORTS_SCRIPT = """
import importlib, json, sys, threading
config_kwargs = json.loads(sys.argv[1])
first_imports = ["transformers.modeling_utils", "transformers.cache_utils", "transformers.masking_utils",
                 "transformers.models.llama.modeling_llama", "transformers.models.auto.configuration_auto",
                 "transformers.models.mistral.modeling_mistral"]
barrier = threading.Barrier(len(first_imports))
results = {}

def work(name):
    barrier.wait()
    try:
        importlib.import_module(name)
        from transformers.models.llama.configuration_llama import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaForCausalLM
        model = LlamaForCausalLM(LlamaConfig(**config_kwargs))
        results[name] = [list(layer.mlp.up_proj.weight.shape) for layer in model.model.layers]
    except BaseException as error:
        results[name] = f"{type(error).__name__}: {error}"

threads = [threading.Thread(target=work, args=(name,)) for name in first_imports]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(results))
"""


def test_concurrent_first_imports_and_constructions_in_threads():
    """Threads start importing different parts of Transformers at once, then each builds a heterogeneous model.

    Modules only: upstream's lazy `transformers` namespace (`from transformers import X`) and first imports of
    `transformers.trainer` / `transformers.generation` are not thread-safe with or without this package (they fail
    with `ImportError` in threads started together, as measured with the package off)."""
    config = {**TINY, "per_layer_config": {"1": {"intermediate_size": 32}}}
    results = json.loads(run_python(THREADED_FIRST_IMPORTS_SCRIPT, json.dumps(config)))
    assert results == dict.fromkeys(results, [[128, 64], [32, 64], [128, 64]]), results
    assert len(results) == 6


@pytest.mark.overlay_only
def test_callbacks_never_see_a_half_executed_module():
    """`after_import` on a module that is still executing defers to the end of its execution."""
    code = (
        "import transformers_heterogeneity_hook as hook, sys, json\n"
        "seen = []\n"
        "def check(module):\n"
        "    seen.append(hasattr(module, 'PreTrainedModel'))\n"
        "hook.after_import('transformers.configuration_utils',\n"
        "    lambda m: hook.after_import('transformers.modeling_utils', check))\n"
        "import transformers.modeling_utils\n"
        "print(json.dumps(seen))"
    )
    assert json.loads(run_python(code, env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"})) == [True]
