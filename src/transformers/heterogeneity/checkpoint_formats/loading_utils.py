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
"""Checkpoint tensors that a family's model reads and does not use, said so when it loads.

Released checkpoints carry tensors that the stock modules have no place for: fp8 KV-cache scales
(`self_attn.k_scale` / `v_scale`, one scalar per attention layer, for engines that keep the KV cache in fp8; vLLM
remaps them) and, in Nemotron-H Puzzle, the multi-token-prediction layers (`mtp.*`, which upstream NemotronH 5.23 does
not build). Reported as "unexpected" they would look like a broken checkpoint; dropped silently, a user could not tell
what was left out. A family's model classes list them as `UnusedTensors`; each load then takes them out of the
unexpected keys and logs one line per kind: how many, which, and why they are not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...utils import logging
from ...utils.loading_report import LoadStateDictInfo


logger = logging.get_logger(__name__)

__all__ = ["FP8_KV_SCALES", "UnusedTensors", "UnusedTensorsMixin"]


@dataclass(frozen=True)
class UnusedTensors:
    """A kind of checkpoint tensor the model reads and does not use.

    Attributes:
        pattern: regular expression searched in the checkpoint's tensor names.
        what: what these tensors are, for the log line.
        why: why the model does not use them.
        warn: log at warning level (the model lacks something the checkpoint has) rather than info (nothing is lost).
    """

    pattern: str
    what: str
    why: str
    warn: bool = False


FP8_KV_SCALES = UnusedTensors(
    r"\.self_attn\.[kv]_scale$",
    "fp8 KV-cache scales (`self_attn.k_scale` / `v_scale`)",
    "Transformers' caches keep keys and values in the model's dtype, where these scales have no role",
)


class UnusedTensorsMixin:
    """Mixed into a family's `PreTrainedModel` subclasses, before the stock class; they set `_unused_tensors`."""

    _unused_tensors: tuple[UnusedTensors, ...] = ()

    def _adjust_missing_and_unexpected_keys(self, loading_info: LoadStateDictInfo) -> None:
        """Takes this family's unused tensors out of the unexpected keys and logs them, then runs upstream's filter.

        `PreTrainedModel._adjust_missing_and_unexpected_keys` (Transformers 5.23) is the method `from_pretrained`
        calls with the load's report before logging it; this override only removes keys, as upstream's filter does,
        and runs first because upstream's own patterns (NemotronH's `mtp.*`) would drop some of them unreported.
        """
        for kind in self._unused_tensors:
            regex = re.compile(kind.pattern)
            found = sorted(key for key in loading_info.unexpected_keys if regex.search(key))
            if not found:
                continue
            loading_info.unexpected_keys.difference_update(found)
            log = logger.warning if kind.warn else logger.info
            log(
                f"{type(self).__name__}: the checkpoint's {len(found)} {kind.what} were read and are not used: "
                f"{kind.why}. First ones: {found[:3]}."
            )
        super()._adjust_missing_and_unexpected_keys(loading_info)
