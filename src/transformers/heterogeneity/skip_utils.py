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
"""Replacement modules for skipped sub-blocks (`per_layer_config={i: {"skip": [...]}}`).

A skipped sub-block must keep the calling contract of the module it replaces: upstream decoder layers unpack
`hidden_states, _ = self.self_attn(...)` and then add the residual, so a skipped attention returns `(zeros, None)`
and its paired norm returns its input unchanged. A bare `nn.Identity` would add the normalized input back onto the
residual stream. Replacements hold no parameters, so a skipped sub-block writes no state-dict entries.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


__all__ = ["ReturnEntry", "SkippedModule", "get_skip_replacement"]


@dataclass(frozen=True)
class ReturnEntry:
    """One value returned by a skip replacement.

    Args:
        arg_name (`str` or `None`):
            Name of an argument of the replaced module's `forward` (passed positionally or by keyword) whose value is
            returned, or `None` to return `None` in this position (e.g. the attention weights of an attention).
        transform (`Callable`, *optional*):
            Applied to the argument before it is returned, e.g. `torch.zeros_like` so that a residual add becomes a
            no-op. Defaults to returning the argument unchanged.
    """

    arg_name: str | None
    transform: Callable[[Any], Any] | None = None


class SkippedModule(nn.Module):
    """Base class of the modules that stand in for a skipped sub-block; build subclasses with `get_skip_replacement`.

    Subclasses set `replaces` (the replaced class), `return_entries`, `_arg_positions` (positional index of every
    argument named by an entry) and `dtype_attributes`.
    """

    replaces: type[nn.Module]
    return_entries: tuple[ReturnEntry, ...]
    _arg_positions: dict[str, int]
    dtype_attributes: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        # Some layers read a member's weight only for its dtype (NemotronH's block casts its input to
        # `norm.weight.dtype`): an empty non-persistent buffer answers that, follows `model.to(dtype)`, holds no
        # memory and writes no state-dict entry.
        for name in self.dtype_attributes:
            self.register_buffer(name, torch.empty(0), persistent=False)

    def forward(self, *args, **kwargs):
        outputs = tuple(self._resolve(entry, args, kwargs) for entry in self.return_entries)
        return outputs[0] if len(outputs) == 1 else outputs

    def _resolve(self, entry: ReturnEntry, args: tuple, kwargs: dict) -> Any:
        if entry.arg_name is None:
            return None
        if entry.arg_name in kwargs:
            value = kwargs[entry.arg_name]
        else:
            position = self._arg_positions.get(entry.arg_name)  # keyword-only arguments have none
            if position is None or position >= len(args):
                raise TypeError(
                    f"{type(self).__name__} stands in for {self.replaces.__name__} and returns its argument "
                    f"`{entry.arg_name}`, which this call did not pass."
                )
            value = args[position]
        return value if entry.transform is None else entry.transform(value)

    @classmethod
    def for_layer(cls, layer_config) -> SkippedModule:
        """Builds the replacement for a layer built from `layer_config`; a skip needs nothing from it."""
        return cls()

    def extra_repr(self) -> str:
        return f"replaces={self.replaces.__name__}"

    def __reduce_ex__(self, protocol):
        # The class is made at runtime, so pickle cannot find it by name: rebuild it from what it replaces.
        return _rebuild_skipped_module, (
            self.replaces,
            self.return_entries,
            self.__dict__.copy(),
            self.dtype_attributes,
        )


def _rebuild_skipped_module(
    member_cls: type[nn.Module],
    return_entries: tuple[ReturnEntry, ...],
    state: dict[str, Any],
    dtype_attributes: tuple[str, ...] = (),
) -> SkippedModule:
    module = object.__new__(get_skip_replacement(member_cls, *return_entries, dtype_attributes=dtype_attributes))
    module.__dict__.update(state)
    return module


@functools.cache
def get_skip_replacement(
    member_cls: type[nn.Module], *return_entries: ReturnEntry, dtype_attributes: tuple[str, ...] = ()
) -> type[SkippedModule]:
    """Returns a parameter-free module class that stands in for `member_cls` in a skipped sub-block.

    The replacement accepts every call `member_cls.forward` accepts and returns the given entries: a single entry is
    returned bare, several as a tuple, mirroring the replaced module. Classes are cached, so equal requests give the
    same class. `dtype_attributes` names attributes of `member_cls` that the layer reads only for their dtype
    (`"weight"` of a norm whose input is cast to it); the replacement holds them as empty buffers.

    Example:

    ```python
    >>> SkippedAttention = get_skip_replacement(
    ...     LlamaAttention, ReturnEntry("hidden_states", torch.zeros_like), ReturnEntry(None)
    ... )
    ```

    Raises:
        ValueError: no entry given, or an entry names an argument that `member_cls.forward` does not take.
    """
    if not return_entries:
        raise ValueError(f"get_skip_replacement({member_cls.__name__}) needs at least one ReturnEntry.")
    parameters = list(inspect.signature(member_cls.forward).parameters.values())[1:]  # drop `self`
    positions = {
        parameter.name: index
        for index, parameter in enumerate(parameters)
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    keyword_names = {parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    for entry in return_entries:
        if entry.arg_name is not None and entry.arg_name not in positions.keys() | keyword_names:
            raise ValueError(
                f"ReturnEntry({entry.arg_name!r}) names no argument of {member_cls.__name__}.forward; "
                f"its arguments are {sorted(positions.keys() | keyword_names)}."
            )
    return type(
        f"Skipped{member_cls.__name__}",
        (SkippedModule,),
        {
            "__module__": __name__,
            "__doc__": f"Parameter-free stand-in for a skipped `{member_cls.__name__}`.",
            "replaces": member_cls,
            "return_entries": return_entries,
            "_arg_positions": positions,
            "dtype_attributes": tuple(dtype_attributes),
        },
    )


def passthrough(arg_name: str) -> tuple[ReturnEntry, ...]:
    """Return entries of a replacement that hands back its input: a skipped norm."""
    return (ReturnEntry(arg_name),)


def zeros(arg_name: str) -> tuple[ReturnEntry, ...]:
    """Return entries of a replacement whose output is added to the residual: a skipped MLP."""
    return (ReturnEntry(arg_name, torch.zeros_like),)


def zeros_and_no_weights(arg_name: str) -> tuple[ReturnEntry, ...]:
    """Return entries of a replacement for an attention that returns `(output, attention_weights)`."""
    return (ReturnEntry(arg_name, torch.zeros_like), ReturnEntry(None))


def output_and_no_weights(arg_name: str) -> tuple[ReturnEntry, ...]:
    """Return entries of a linear attention: its output (the linear map of its input) and no attention weights."""
    return (ReturnEntry(arg_name), ReturnEntry(None))
