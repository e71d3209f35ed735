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
"""What the configs of heterogeneous checkpoint families share: their own per-layer fields become `per_layer_config`.

Families such as Nemotron-NAS (`block_configs`) and DeciLM (`num_key_value_heads_per_layer`) describe their layers
in fields of their own and leave some global values null. Their config classes translate those fields into the
per-layer vocabulary when the config is made, so that the stock modeling code builds the model, and write the
source fields back when saved, so that `save_pretrained` keeps the checkpoint in the format it came in (and loadable
by the other tools that read that format). The canonical form (`model_type: llama` plus `per_layer_config`) is what
`to_canonical_dict` returns and `transformers-heterogeneity convert` writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ...utils import logging
from ..configuration_utils import HeterogeneousConfigError
from . import register_models


logger = logging.get_logger(__name__)

__all__ = ["CheckpointFormatConfigMixin", "most_common", "mxfp4_dequantized_on_load"]

# Keys of a format config that exist only in that format: dropped from the canonical form.
_FORMAT_ONLY_KEYS = ("auto_map", "model_type", "architectures", "transformers_version")


def most_common(values: Iterable[Any], default: Any) -> Any:
    """The most frequent value (the first seen among equals), or `default` when there is none. A global value chosen
    this way keeps `per_layer_config` sparse: upstream drops overrides equal to the global value."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else default


def mxfp4_dequantized_on_load(quantization: Any) -> dict[str, Any] | None:
    """The MXFP4 `quantization_config` of a model with per-layer expert counts, made to dequantize on load; `None`
    when there is nothing to change.

    MXFP4 expert kernels are built from the global expert count (see `modeling_utils._check_quantization`), so with
    per-layer counts the released MXFP4 experts load dequantized unless the file says otherwise (`dequantize: false`
    is then refused). The kernel path is also the only one for which upstream's MXFP4 quantizer needs `accelerate`
    (`Mxfp4HfQuantizer.validate_environment`, transformers 5.23): a dequantized load does not.
    """
    if (
        not isinstance(quantization, dict)
        or quantization.get("quant_method") != "mxfp4"
        or "dequantize" in quantization
    ):
        return None
    logger.warning_once(
        "The MXFP4 experts are dequantized on load (to the model's dtype), as MXFP4 kernels cannot hold per-layer "
        "expert counts."
    )
    return {**quantization, "dequantize": True}


class CheckpointFormatConfigMixin:
    """Mixed into a config subclass of a supported architecture (Llama, GPT-OSS) that reads a checkpoint family's own
    per-layer fields.

    Subclasses set `format_fields` (the family's per-layer fields, kept as they are) and implement
    `_translate_format_fields`, which returns the `per_layer_config` and the global values the source left null.
    A config without the family's per-layer fields (`Config()`, as every Transformers config can be made) describes
    the homogeneous model of the architecture it derives from; a field that is given must describe every layer.
    """

    format_fields: tuple[str, ...] = ()
    # Model class name -> the name the family's checkpoints give in `architectures`, where the two differ (a class
    # name is taken by another family): written back on save, so that tools dispatching on it still read the file.
    released_architectures: dict[str, str] = {}
    # The stock architecture the family derives from: the canonical form is this model type plus `per_layer_config`.
    canonical_model_type: str = "llama"
    canonical_architecture: str = "LlamaForCausalLM"

    def __post_init__(self, **kwargs):
        if kwargs.get("per_layer_config") is not None:
            raise HeterogeneousConfigError(
                f"A {self.model_type} config describes its layers with {list(self.format_fields)}, so it does not take "
                "`per_layer_config` as well: edit those fields, or convert the checkpoint to the canonical "
                "`model_type: llama` form (`transformers-heterogeneity convert SRC DST`), which takes any "
                "`per_layer_config`."
            )
        per_layer_config, derived_globals = self._translate_format_fields()
        for name, value in derived_globals.items():
            setattr(self, name, value)
        # The source leaves these null; written back as null so that a saved checkpoint keeps its format.
        self._derived_globals = tuple(derived_globals)
        if per_layer_config:
            kwargs["per_layer_config"] = per_layer_config
        super().__post_init__(**kwargs)
        register_models(self.model_type)  # the Auto classes look the model up from this config next

    def _translate_format_fields(self) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        raise NotImplementedError

    def _one_block_per_layer(self) -> list[Any]:
        """`block_configs`, checked to be a list of one mapping per layer."""
        blocks = self.block_configs or []
        if not isinstance(blocks, list):
            raise HeterogeneousConfigError(
                f"{self.model_type}: `block_configs` must be a list of one block per layer, got {blocks!r:.200}."
            )
        if len(blocks) != self.num_hidden_layers:
            raise HeterogeneousConfigError(
                f"{self.model_type}: `block_configs` has {len(blocks)} entries but `num_hidden_layers` is "
                f"{self.num_hidden_layers}; a checkpoint gives one block per layer."
            )
        for layer_idx, block in enumerate(blocks):
            if not isinstance(block, dict):
                raise HeterogeneousConfigError(
                    f"{self.model_type} layer {layer_idx}: `block_configs[{layer_idx}]` is {block!r:.200}; each block "
                    "is a mapping such as {'attention': {...}, 'ffn': {...}}."
                )
        return blocks

    def to_dict(self) -> dict[str, Any]:
        """The source format: the family's own fields, without the `per_layer_config` derived from them."""
        return self._to_source_format(super().to_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        # Upstream adds `per_layer_config` back after diffing against the defaults.
        return self._to_source_format(super().to_diff_dict())

    def _to_source_format(self, output: dict[str, Any]) -> dict[str, Any]:
        output.pop("per_layer_config", None)
        output.pop("_derived_globals", None)
        for name in self._derived_globals:
            output[name] = None
        if output.get("architectures"):
            output["architectures"] = [self.released_architectures.get(name, name) for name in output["architectures"]]
        return output

    def to_canonical_dict(self) -> dict[str, Any]:
        """The same model as a stock config dict with `per_layer_config` (Llama unless the family says otherwise)."""
        output = super().to_dict()
        output.pop("_derived_globals", None)
        for key in (*self.format_fields, *_FORMAT_ONLY_KEYS):
            output.pop(key, None)
        output["model_type"] = self.canonical_model_type
        output["architectures"] = [self.canonical_architecture]
        return output
