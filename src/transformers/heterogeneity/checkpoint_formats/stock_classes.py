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
"""What a family's model class, a stock class bound to another config in another module, must answer like the stock
class.

`PreTrainedModel._can_set_experts_implementation` (transformers 5.23, `modeling_utils.py`) decides whether a class may
use the `grouped_mm` experts kernels by looking for `@use_experts_implementation` in the source of the class's own
module, and caches the answer on the class first asked. Asked first on `NemotronHPuzzleForCausalLM` (whose module has
no experts), it answered `False` and the experts ran `eager`; asked first on the stock class, subclasses inherited
`True`. The same checkpoint then computed differently (in the last bits) depending on what was loaded before.
"""

from __future__ import annotations


__all__ = ["StockExpertsMixin"]


class StockExpertsMixin:
    """Answers `_can_set_experts_implementation` as the stock class it derives from does."""

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # The first model class of the MRO that is not a family class: the family classes live in
        # `transformers.models.<family>` too, so the module path cannot tell them apart.
        stock = next(
            base
            for base in cls.__mro__
            if not issubclass(base, StockExpertsMixin) and hasattr(base, "_can_set_experts_implementation")
        )
        return stock._can_set_experts_implementation()
