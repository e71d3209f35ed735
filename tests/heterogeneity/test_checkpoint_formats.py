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
"""The checkpoint families are model packages in upstream's layout (`transformers/models/<package>/`), and the Auto
classes find them in both homes: registered by the overlay, or named by upstream's own mappings (the patched tree)."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest
import torch

import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin
from transformers.heterogeneity.checkpoint_formats import CHECKPOINT_FORMATS
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING, model_type_to_module_name

from .checkpoints import write_deci_checkpoint, write_nemotron_checkpoint
from .gpt_oss_checkpoints import write_puzzle_checkpoint as write_gpt_oss_puzzle_checkpoint
from .nemotron_h_puzzle_checkpoint import write_puzzle_checkpoint as write_nemotron_h_puzzle_checkpoint
from .test_activation import run_python


WRITERS = {
    "nemotron-nas": write_nemotron_checkpoint,
    "deci": write_deci_checkpoint,
    "gpt_oss_puzzle": write_gpt_oss_puzzle_checkpoint,
    "nemotron_h_puzzle": write_nemotron_h_puzzle_checkpoint,
}


def exported_names(directory: Path) -> dict[str, set[str]]:
    """`__all__` of every module of a package directory, read from the source (as upstream's import structure is)."""
    names = {}
    for path in sorted(directory.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = [
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(getattr(target, "id", None) == "__all__" for target in node.targets)
        ]
        assert len(assigned) == 1, f"{path} must define `__all__` once, as every upstream model module does"
        names[path.stem] = set(ast.literal_eval(assigned[0]))
    return names


def package_dir(model_type: str) -> Path:
    """Where the family's package is imported from: the repository's `src/` (editable install), the installed
    `transformers/models/` (`pip install .`), or the patched tree."""
    module = importlib.import_module(f"transformers.models.{CHECKPOINT_FORMATS[model_type].package}")
    return Path(module.__file__).parent


def test_every_family_has_a_checkpoint_writer_for_the_tests_below():
    assert WRITERS.keys() == CHECKPOINT_FORMATS.keys()


@pytest.mark.parametrize("model_type", sorted(CHECKPOINT_FORMATS))
def test_each_family_is_a_lazy_model_package_exporting_its_classes(model_type):
    checkpoint_format = CHECKPOINT_FORMATS[model_type]
    package = checkpoint_format.package
    assert model_type_to_module_name(model_type) == package  # how upstream's Auto mappings find the package
    exported = exported_names(package_dir(model_type))
    assert set(exported) == {f"configuration_{package}", f"modeling_{package}"}
    assert exported[f"configuration_{package}"] == {checkpoint_format.config}
    assert exported[f"modeling_{package}"] == set(checkpoint_format.models.values())

    module = importlib.import_module(f"transformers.models.{package}")
    assert type(module).__name__ == "_LazyModule"
    for module_name, names in exported.items():
        for name in names:
            assert getattr(module, name).__module__ == f"transformers.models.{package}.{module_name}"


def test_no_exported_name_is_taken_by_another_family_or_by_upstream():
    """Upstream's top-level `transformers` namespace maps each name to one module: a name exported twice would resolve
    to whichever package its directory scan meets last."""
    owners = {}
    for model_type, checkpoint_format in CHECKPOINT_FORMATS.items():
        for module_name, names in exported_names(package_dir(model_type)).items():
            for name in names:
                assert name not in owners, f"{name} is exported by {owners.get(name)} and {module_name}"
                owners[name] = f"models.{checkpoint_format.package}.{module_name}"
    # Where upstream's scan of `transformers/models/` sees the families (a non-editable install), it maps their names
    # to them; no upstream module may own one of them.
    top_level = transformers._class_to_module
    assert {name: top_level[name] for name in owners if name in top_level} == {
        name: module for name, module in owners.items() if name in top_level
    }


@pytest.mark.parametrize("model_type", sorted(CHECKPOINT_FORMATS))
def test_auto_classes_resolve_each_family(model_type, tmp_path):
    """`CONFIG_MAPPING` knows the family from the start; its models are registered when its first config is made."""
    checkpoint_format = CHECKPOINT_FORMATS[model_type]
    config_class = CONFIG_MAPPING[model_type]
    assert config_class is checkpoint_format.config_class() and config_class.model_type == model_type
    config = AutoConfig.from_pretrained(WRITERS[model_type](tmp_path))
    assert type(config) is config_class
    for auto_name, model_name in checkpoint_format.models.items():
        model_class = getattr(modeling_auto, auto_name)._model_mapping[config_class]
        assert model_class is checkpoint_format.model_class(model_name) and model_class.config_class is config_class
        # Upstream's convention for generative classes (GenerationTesterMixin.test_inherits_generation_mixin).
        assert (GenerationMixin in model_class.__bases__) == (auto_name == "AutoModelForCausalLM")


@pytest.mark.parametrize("model_type", sorted(CHECKPOINT_FORMATS))
def test_a_config_made_from_defaults_describes_the_homogeneous_parent(model_type, tmp_path):
    """As every Transformers config, a family config can be made without arguments; without the family's per-layer
    fields it describes every layer alike, and it saves and loads back."""
    config = CONFIG_MAPPING[model_type]()
    assert not config.is_heterogeneous
    config.save_pretrained(tmp_path)
    assert type(config).from_pretrained(tmp_path).to_dict() == config.to_dict()


# The entries the patched tree adds to upstream's mappings, made here before the package activates.
UPSTREAM_HOLDS_THE_FAMILIES = """
import json, sys
import torch
from transformers import conversion_mapping
from transformers.models.auto import configuration_auto, modeling_auto

families = json.loads(sys.argv[1])
for model_type, (config_name, base_name, causal_lm_name) in families.items():
    configuration_auto.CONFIG_MAPPING_NAMES[model_type] = config_name
    modeling_auto.MODEL_MAPPING_NAMES[model_type] = base_name
    modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type] = causal_lm_name
    for mapping in (modeling_auto.MODEL_MAPPING, modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING):
        mapping._reverse_config_mapping[config_name] = model_type
conversion_mapping._MODEL_TO_CONVERSION_PATTERN["nemotron_h_puzzle"] = "nemotron_h"

import transformers.heterogeneity  # activation: registers what upstream does not hold, here nothing
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin

loaded = {}
for model_type, path in json.loads(sys.argv[2]).items():
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        torch.save(model(torch.tensor([[1, 2, 3, 4, 5]])).logits, f"{path}/logits.pt")
    loaded[model_type] = type(model).__name__
print(json.dumps({
    "loaded": loaded,
    "registered_configs": sorted(configuration_auto.CONFIG_MAPPING._extra_content),
    "registered_models": sorted(
        c.__name__ for mapping in (modeling_auto.MODEL_MAPPING, modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING)
        for c in mapping._extra_content if c.__name__ in configuration_auto.CONFIG_MAPPING_NAMES.values()
    ),
    "registered_conversions": sorted(conversion_mapping.USER_REGISTERED_MAPPINGS),
}))
"""


def test_upstream_mappings_holding_the_families_make_registration_a_no_op(tmp_path):
    """The patched tree names the families in `CONFIG_MAPPING_NAMES`, `MODEL_MAPPING_NAMES`,
    `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` and the conversion aliases: the package then registers nothing, and each
    checkpoint loads through upstream's own mappings as the same model the overlay's registrations load."""
    families = {
        model_type: [checkpoint_format.config, *checkpoint_format.models.values()]
        for model_type, checkpoint_format in CHECKPOINT_FORMATS.items()
    }
    paths = {
        model_type: str(writer(tmp_path / model_type.replace("-", "_"))) for model_type, writer in WRITERS.items()
    }
    result = json.loads(
        run_python(
            UPSTREAM_HOLDS_THE_FAMILIES,
            json.dumps(families),
            json.dumps(paths),
            env={"TRANSFORMERS_HETEROGENEITY_AUTO_ACTIVATE": "0"},
        )
    )
    assert result == {
        "loaded": {model_type: models[2] for model_type, models in families.items()},
        "registered_configs": [],
        "registered_models": [],
        "registered_conversions": [],
    }
    for model_type, path in paths.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # the overlay's registrations
        with torch.no_grad():
            expected = model(torch.tensor([[1, 2, 3, 4, 5]])).logits
        assert torch.equal(torch.load(Path(path) / "logits.pt"), expected), model_type
