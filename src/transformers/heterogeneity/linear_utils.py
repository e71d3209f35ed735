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
"""Linear sub-blocks: an attention or MLP replaced by one bias-free `hidden x hidden` linear map.

Nemotron-NAS (`replace_with_linear`) distils some attentions and MLPs into a single matrix: the layer computes
`x + W @ norm(x)`. The paired norm stays; only the sub-block is swapped, for a module that keeps the calling contract
of the one it replaces (a linear attention returns `(W @ hidden_states, None)`) and holds its matrix under the name
those checkpoints use (`self_attn.linear_attn.weight`, `mlp.linear_mlp.weight`). A linear attention reads no
positions and writes no KV cache.

In `per_layer_config` a linear sub-block is a skip kind (`"skip": ["attention_replaced_by_linear"]`): upstream's config
validation accepts any string in `skip` but requires every other per-layer key to exist on the global config, and a
linear sub-block is a replacement of the sub-block, like a skip, so it shares that mechanism.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from .skip_utils import ReturnEntry, SkippedModule, get_skip_replacement


__all__ = ["LinearSubBlock", "get_linear_replacement"]


class LinearSubBlock(SkippedModule):
    """Base class of the modules that replace a sub-block by one linear map; build subclasses with
    `get_linear_replacement`.

    It returns what a skip replacement would return, with the linear map applied to every returned argument (the
    sub-block's output): `ReturnEntry(None)` entries (attention weights) stay `None`.
    """

    linear_name: str

    def __init__(self, hidden_size: int):
        super().__init__()
        self.add_module(self.linear_name, nn.Linear(hidden_size, hidden_size, bias=False))

    @classmethod
    def for_layer(cls, layer_config) -> LinearSubBlock:
        return cls(layer_config.hidden_size)

    def _resolve(self, entry: ReturnEntry, args: tuple, kwargs: dict) -> Any:
        value = super()._resolve(entry, args, kwargs)
        return value if entry.arg_name is None else getattr(self, self.linear_name)(value)

    def __reduce_ex__(self, protocol):
        # Made at runtime like skip replacements: rebuild the class from what it replaces.
        return _rebuild_linear_sub_block, (
            self.replaces,
            self.linear_name,
            self.return_entries,
            self.__dict__.copy(),
        )


def _rebuild_linear_sub_block(
    member_cls: type[nn.Module], linear_name: str, return_entries: tuple[ReturnEntry, ...], state: dict[str, Any]
) -> LinearSubBlock:
    module = object.__new__(get_linear_replacement(member_cls, linear_name, *return_entries))
    module.__dict__.update(state)
    return module


@functools.cache
def get_linear_replacement(
    member_cls: type[nn.Module], linear_name: str, *return_entries: ReturnEntry
) -> type[LinearSubBlock]:
    """Makes the class that replaces a `member_cls` sub-block by one bias-free `hidden x hidden` linear map.

    Args:
        member_cls (`type[nn.Module]`): the replaced class, e.g. `LlamaAttention`.
        linear_name (`str`): attribute holding the `nn.Linear`, which names its weight in the state dict
            (`"linear_attn"` gives `self_attn.linear_attn.weight`).
        return_entries (`ReturnEntry`): what the replacement returns, as for `get_skip_replacement`; the linear map
            is applied to each returned argument, so entries take no `transform`.

    Example:

    ```python
    >>> LinearAttention = get_linear_replacement(
    ...     LlamaAttention, "linear_attn", ReturnEntry("hidden_states"), ReturnEntry(None)
    ... )
    ```

    Raises:
        ValueError: an entry has a `transform`, or names an argument `member_cls.forward` does not take.
    """
    transformed = [entry.arg_name for entry in return_entries if entry.transform is not None]
    if transformed:
        raise ValueError(
            f"get_linear_replacement({member_cls.__name__}): ReturnEntry({transformed[0]!r}) has a transform, but a "
            "linear sub-block returns the linear map of its argument; drop the transform."
        )
    skip_cls = get_skip_replacement(member_cls, *return_entries)  # checks the entries against the signature
    return type(
        f"Linear{member_cls.__name__}",
        (LinearSubBlock, skip_cls),
        {
            "__module__": __name__,
            "__doc__": f"A `{member_cls.__name__}` replaced by one bias-free linear map (`{linear_name}`).",
            "linear_name": linear_name,
        },
    )
