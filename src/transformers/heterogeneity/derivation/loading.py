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
"""What `from_pretrained` says when a checkpoint's tensors do not fit a heterogeneous config (`activation.py` calls
`check_loaded_tensors` before upstream's load report).

Loading a checkpoint with a `per_layer_config` that changes a layer's shapes (`from_pretrained(parent,
per_layer_config={1: {"intermediate_size": 64}})`) is not a load but a new model made from the parent's weights. Upstream
stops with a size-mismatch `RuntimeError` that suggests `ignore_mismatched_sizes=True`, which would initialise those
tensors randomly. Here the error names each layer, tensor and both shapes, and points to `derive`, which initialises
them from the parent's weights. With `ignore_mismatched_sizes=True` upstream's documented behaviour stays (the tensors
are randomly initialised and listed in the load report) and a warning points to `derive`.

Tensors of sub-blocks that the config skips or replaces by a linear map are not unexpected: the config removed them on
purpose. They are taken out of the unexpected keys and logged as dropped by that skip, layer by layer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...utils import logging
from ..configuration_utils import HeterogeneousConfigError, get_layer_overrides


logger = logging.get_logger(__name__)

__all__ = ["ParentShapeMismatchError", "check_loaded_tensors"]


class ParentShapeMismatchError(HeterogeneousConfigError, RuntimeError):
    """A checkpoint's tensors have other shapes than the heterogeneous config gives its layers. A `RuntimeError`
    too, as upstream's size-mismatch error is, so code that catches that still does."""


def check_loaded_tensors(model: Any, ignore_mismatched_sizes: bool, loading_info: Any) -> None:
    """Called by `from_pretrained` with the load's report, before upstream logs it; does nothing for homogeneous
    configs and for models that read `per_layer_config` natively.

    Raises:
        ParentShapeMismatchError: a tensor's shape differs and `ignore_mismatched_sizes` is not set.
    """
    from ..modeling_utils import is_heterogeneous
    from ..supported_models import get_config_spec, reads_per_layer_config_natively, spec_from_model_class

    config = model.config
    if not is_heterogeneous(config) or reads_per_layer_config_natively(type(model), config):
        return
    # Only unexpected tensors (dropped by a skip) and mismatched ones are reported: a load that has neither, as every
    # load of a checkpoint saved from its own model, walks no modules.
    if not loading_info.unexpected_keys and not loading_info.mismatched_keys:
        return
    spec = spec_from_model_class(type(model)) or get_config_spec(config)
    if spec is None:
        return
    layer_prefixes = [name for name, module in model.named_modules() if isinstance(module, spec.layer_cls)]
    _report_skipped_tensors(model, config, spec, layer_prefixes, loading_info)
    if loading_info.mismatched_keys:
        _report_mismatches(model, config, layer_prefixes, loading_info, ignore_mismatched_sizes)


def _report_skipped_tensors(model, config, spec, layer_prefixes: list[str], loading_info) -> None:
    dropped: dict[tuple[int, str], list[str]] = defaultdict(list)
    for layer_idx, prefix in enumerate(layer_prefixes):
        for skip_name in get_layer_overrides(config, layer_idx).get("skip", []):
            members = tuple(f"{prefix}.{member}." for member in spec.skip_descriptors.get(skip_name, {}))
            for key in sorted(loading_info.unexpected_keys):
                if key.startswith(members):
                    dropped[layer_idx, skip_name].append(key)
    for (layer_idx, skip_name), keys in sorted(dropped.items()):
        loading_info.unexpected_keys.difference_update(keys)
        logger.warning(
            f"{type(model).__name__}: layer {layer_idx} skips {skip_name!r}, so the checkpoint's {len(keys)} tensors "
            f"of that sub-block are dropped: {', '.join(keys)}."
        )
    missing_linear = sorted(
        key for key in loading_info.missing_keys if ".linear_attn." in key or ".linear_mlp." in key
    )
    if dropped and missing_linear:
        logger.warning(
            f"{type(model).__name__}: the checkpoint has no weights for the linear sub-blocks {missing_linear}; they "
            "are initialised randomly. `transformers.heterogeneity.derivation` fits them to the replaced sub-blocks by "
            "least squares on calibration data."
        )


def _report_mismatches(model, config, layer_prefixes: list[str], loading_info, ignore_mismatched_sizes: bool) -> None:
    layer_of = {prefix: idx for idx, prefix in enumerate(layer_prefixes)}
    lines = []
    for key, checkpoint_shape, model_shape in sorted(loading_info.mismatched_keys):
        layer_idx = next((idx for prefix, idx in layer_of.items() if key.startswith(f"{prefix}.")), None)
        where = "model-level tensor" if layer_idx is None else f"layer {layer_idx}"
        overrides = {} if layer_idx is None else get_layer_overrides(config, layer_idx)
        because = f" (per_layer_config: {overrides})" if overrides else ""
        lines.append(
            f"  {where}: {key} is {tuple(checkpoint_shape)} in the checkpoint and {tuple(model_shape)} in the model "
            f"built from the config{because}"
        )
    advice = (
        "A checkpoint loaded with another per-layer shape is a new model made from its weights: use "
        "`transformers.heterogeneity.derive(checkpoint, per_layer_config, ...)` (or `transformers-heterogeneity derive "
        "CHECKPOINT OUT --per-layer-config ...`), which initialises these tensors from the checkpoint's (truncation, "
        "activation importance, KV-head averaging, ...)."
    )
    if ignore_mismatched_sizes:
        logger.warning(
            f"{type(model).__name__}: these tensors do not fit the heterogeneous config and are initialised randomly "
            f"(ignore_mismatched_sizes=True):\n" + "\n".join(lines) + f"\n{advice}"
        )
        return
    raise ParentShapeMismatchError(
        f"{type(model).__name__}: the checkpoint's tensors do not fit `per_layer_config`:\n"
        + "\n".join(lines)
        + f"\n{advice} `ignore_mismatched_sizes=True` loads them randomly initialised instead."
    )
