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
"""CPU kernels for TransformerEngine 2.20.2's attention path: rope, the fused softmax variants of its unfused
attention, the fused-attention backend query, the KV-cache copy and the bshd/thd layout conversions.

Same conventions as `kernels.py` (TE's positional signatures; fp32 compute, one rounding; unsupported features raise).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .enums import NVTE_Fused_Attn_Backend, NVTE_QKV_Format
from .kernels import check_plain, refuse


# ---------------------------------------------------------------- rotary position embedding


def _rotate(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """The linear map rope multiplies by sin: halves `(x1, x2) -> (-x2, x1)`, or pairs `(a, b) -> (-b, a)`."""
    if interleaved:
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _rope_positions(
    qkv_format: object,
    t: torch.Tensor,
    start_positions: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> torch.Tensor:
    """Absolute position of every token of `t`, shaped to broadcast against `t` without its last two dims."""
    fmt = int(qkv_format)
    if fmt == int(NVTE_QKV_Format.NVTE_THD):
        if cu_seqlens is None:
            refuse("thd rope without cu_seqlens")
        positions = torch.empty(t.shape[0], dtype=torch.long, device=t.device)
        bounds = cu_seqlens.tolist()
        for row, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            offset = 0 if start_positions is None else int(start_positions[row])
            positions[begin:end] = torch.arange(end - begin, device=t.device) + offset
        return positions
    if fmt == int(NVTE_QKV_Format.NVTE_BSHD):
        batch, seq = t.shape[0], t.shape[1]
        positions = torch.arange(seq, device=t.device).expand(batch, seq)
        if start_positions is not None:
            positions = positions + start_positions.to(torch.long).view(batch, 1)
        return positions
    if fmt == int(NVTE_QKV_Format.NVTE_SBHD):
        seq, batch = t.shape[0], t.shape[1]
        positions = torch.arange(seq, device=t.device).view(seq, 1).expand(seq, batch)
        if start_positions is not None:
            positions = positions + start_positions.to(torch.long).view(1, batch)
        return positions
    refuse("this rope tensor format", qkv_format)


def _apply_rope(
    t: torch.Tensor,
    freqs: torch.Tensor,
    start_positions: torch.Tensor | None,
    qkv_format: object,
    interleaved: bool,
    cu_seqlens: torch.Tensor | None,
    cp_size: int,
    cp_rank: int,
    sign: float,
) -> torch.Tensor:
    if cp_size != 1:
        refuse("context-parallel rope", cp_size)
    check_plain("fused_rope", t)
    positions = _rope_positions(qkv_format, t, start_positions, cu_seqlens)
    if int(positions.max()) >= freqs.shape[0]:
        raise ValueError(f"rope position {int(positions.max())} is beyond the {freqs.shape[0]} rows of freqs")
    rot_dim = freqs.shape[-1]
    angles = freqs.float().reshape(freqs.shape[0], rot_dim)[positions].unsqueeze(-2)  # [..., 1, rot_dim]
    x = t.float()
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    rotated = x_rot * angles.cos() + sign * _rotate(x_rot, interleaved) * angles.sin()
    return torch.cat((rotated, x_pass), dim=-1).to(t.dtype)


def fused_rope_forward(
    t: torch.Tensor,
    freqs: torch.Tensor,
    start_positions: torch.Tensor | None,
    qkv_format: object,
    interleaved: bool,
    cu_seqlens: torch.Tensor | None,
    cp_size: int,
    cp_rank: int,
) -> torch.Tensor:
    """Rope on the first `freqs.shape[-1]` channels: `x cos(f[p]) + rotate(x) sin(f[p])` at token position `p`.

    `freqs` is `[max_positions, 1, 1, rot_dim]` (angles, fp32); positions count from `start_positions[b]` (or 0) in
    each sequence of `sbhd`/`bshd`, or of each `cu_seqlens` segment in `thd`. Channels past `rot_dim` pass through.
    """
    return _apply_rope(t, freqs, start_positions, qkv_format, interleaved, cu_seqlens, cp_size, cp_rank, 1.0)


def fused_rope_backward(
    grad_output: torch.Tensor,
    freqs: torch.Tensor,
    start_positions: torch.Tensor | None,
    qkv_format: object,
    interleaved: bool,
    cu_seqlens: torch.Tensor | None,
    cp_size: int,
    cp_rank: int,
) -> torch.Tensor:
    """Rope backward: the rotation is orthogonal, so the gradient is the same rotation by minus the angle."""
    return _apply_rope(
        grad_output, freqs, start_positions, qkv_format, interleaved, cu_seqlens, cp_size, cp_rank, -1.0
    )


# ---------------------------------------------------------------- softmax (TE's unfused attention)

# TE's fused softmax kernels (`transformer_engine/common/fused_softmax/scaled_masked_softmax.cu`) write -10000 into
# masked logits and return all-zero probabilities for a row whose every logit is masked.
_MASKED_LOGIT = -10000.0


def softmax_backward(output_grads: torch.Tensor, softmax_results: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Backward of every scaled softmax variant: `dx = scale * y * (dy - sum(dy * y))`, the softmax Jacobian applied
    to `dy`, then the input scale (masked entries have zero probability, hence zero gradient)."""
    dy = output_grads.float()
    y = softmax_results.float()
    return (scale_factor * y * (dy - (dy * y).sum(dim=-1, keepdim=True))).to(output_grads.dtype)


def _masked_softmax(logits: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    logits = logits.masked_fill(masked, _MASKED_LOGIT)
    probs = torch.softmax(logits, dim=-1)
    return probs.masked_fill(masked.all(dim=-1, keepdim=True), 0.0)


def scaled_softmax_forward(input: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """`softmax(scale * x)` over the last dimension, in fp32."""
    return torch.softmax(input.float() * scale_factor, dim=-1).to(input.dtype)


def scaled_masked_softmax_forward(input: torch.Tensor, mask: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """`softmax(scale * x)` with logits where `mask` is True (1) set to -10000; fully masked rows give zeros.

    `input` is `[b, h, sq, sk]` and `mask` `[b or 1, 1, sq, sk]` (TE's convention: True masks out).
    """
    masked = mask.to(torch.bool).expand_as(input)
    return _masked_softmax(input.float() * scale_factor, masked).to(input.dtype)


def _causal_softmax(bottom_right: bool) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Causal `softmax(scale * x)`, the diagonal aligned to the top-left corner (`upper_triang`, inputs
    `[attn_batches, sq, sk]`) or to the bottom-right one (`aligned_causal`, inputs `[b, h, sq, sk]`)."""

    def forward(input: torch.Tensor, scale_factor: float) -> torch.Tensor:
        sq, sk = input.shape[-2], input.shape[-1]
        offset = sk - sq + 1 if bottom_right else 1
        masked = torch.ones(sq, sk, dtype=torch.bool, device=input.device).triu(diagonal=offset).expand_as(input)
        return _masked_softmax(input.float() * scale_factor, masked).to(input.dtype)

    return forward


SOFTMAX_KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "scaled_softmax_forward": scaled_softmax_forward,
    "scaled_masked_softmax_forward": scaled_masked_softmax_forward,
    "scaled_upper_triang_masked_softmax_forward": _causal_softmax(bottom_right=False),
    "scaled_aligned_causal_masked_softmax_forward": _causal_softmax(bottom_right=True),
}
SOFTMAX_KERNELS.update({name.replace("_forward", "_backward"): softmax_backward for name in list(SOFTMAX_KERNELS)})


# ---------------------------------------------------------------- attention backend, KV cache and layouts


def get_fused_attn_backend(*args: object, **kwargs: object) -> tuple[NVTE_Fused_Attn_Backend, str]:
    """No cuDNN fused attention exists on the CPU: always `(NVTE_No_Backend, reason)`, so TE falls back to its own
    unfused PyTorch attention (`UnfusedDotProductAttention`). TE 2.20 expects this `(backend, reject_message)` pair."""
    return NVTE_Fused_Attn_Backend.NVTE_No_Backend, "no cuDNN fused attention in the CPU emulation"


def copy_to_kv_cache(
    new_k: torch.Tensor,
    new_v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    cu_new_lens: torch.Tensor,
    cu_cached_lens: torch.Tensor,
    qkv_format: object,
    b: int,
    max_ctx_len: int,
    max_seq_len: int,
    max_pages_per_seq: int,
    is_non_paged: bool,
) -> None:
    """Writes the step's new K/V tokens into the `bshd` (or paged) cache, as TE's `kv_cache.cu` does.

    Sequence `i` holds `cached = diff(cu_cached_lens)[i]` tokens after the step, the last `new = diff(cu_new_lens)[i]`
    of them new. TE's non-paged manager passes `is_non_paged = need_reindex` with `page_table = batch_indices` and one
    page per sequence: when set, the cache rows are first compacted (row `i` takes row `batch_indices[i]`'s old tokens
    wherever the order changed, up to the first decrease in `batch_indices`) and token `j` goes to row `i`; when not,
    it goes to page `page_table[i, pos // page_size]` at offset `pos % page_size`.
    """
    cached = torch.diff(cu_cached_lens).tolist()
    new = torch.diff(cu_new_lens).tolist()
    page_size = max_seq_len // max_pages_per_seq
    table = page_table.view(-1, max_pages_per_seq).tolist() if page_table is not None else None
    if is_non_paged:
        _reindex_kv_cache(k_cache, v_cache, page_table.view(-1).tolist(), cached, new, b)
    fmt = int(qkv_format)
    for row in range(b):
        for j in range(new[row]):
            if fmt == int(NVTE_QKV_Format.NVTE_BSHD):
                k_tok, v_tok = new_k[row, j], new_v[row, j]
            elif fmt == int(NVTE_QKV_Format.NVTE_SBHD):
                k_tok, v_tok = new_k[j, row], new_v[j, row]
            elif fmt == int(NVTE_QKV_Format.NVTE_THD):
                start = int(cu_new_lens[row])
                k_tok, v_tok = new_k[start + j], new_v[start + j]
            else:
                refuse("this KV-cache format", qkv_format)
            pos = cached[row] - new[row] + j
            page = row if is_non_paged else table[row][pos // page_size]
            k_cache.view(-1, page_size, *k_cache.shape[-2:])[page, pos % page_size] = k_tok
            v_cache.view(-1, page_size, *v_cache.shape[-2:])[page, pos % page_size] = v_tok


def _reindex_kv_cache(
    k_cache: torch.Tensor, v_cache: torch.Tensor, batch_indices: list[int], cached: list[int], new: list[int], b: int
) -> None:
    """Moves surviving sequences' cached tokens to the front rows in `batch_indices` order (see `copy_to_kv_cache`)."""
    active = b
    for i in range(b - 1):
        if batch_indices[i + 1] < batch_indices[i]:
            active = i + 1
    shifted = batch_indices[0] != 0
    for row in range(active):
        if shifted or batch_indices[row] - batch_indices[0] != row:
            old_tokens = cached[row] - new[row]
            source = batch_indices[row]
            k_cache[row, :old_tokens] = k_cache[source, :old_tokens].clone()
            v_cache[row, :old_tokens] = v_cache[source, :old_tokens].clone()


def convert_bshd_to_thd(tensor: torch.Tensor, cu_seqlens: torch.Tensor, t: int) -> torch.Tensor:
    """Packs the first `len_i` tokens of each batch row into one `[t, h, d]` tensor."""
    out = tensor.new_zeros((t, *tensor.shape[2:]))
    bounds = cu_seqlens.tolist()
    for row, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        out[begin:end] = tensor[row, : end - begin]
    return out


def convert_thd_to_bshd(tensor: torch.Tensor, cu_seqlens: torch.Tensor, b: int, max_seq_len: int) -> torch.Tensor:
    """Unpacks `[t, h, d]` into zero-padded `[b, max_seq_len, h, d]` rows."""
    out = tensor.new_zeros((b, max_seq_len, *tensor.shape[1:]))
    bounds = cu_seqlens.tolist()
    for row, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        out[row, : end - begin] = tensor[begin:end]
    return out


def fa_prepare_fwd(qkvi: torch.Tensor) -> torch.Tensor:
    """Splits an interleaved `[s, b, h, 3 * d]` QKV view into a `[3, b, s, h, d]` tensor (FlashAttention's input)."""
    s, b, h, d3 = qkvi.shape
    return qkvi.reshape(s, b, h, 3, d3 // 3).permute(3, 1, 0, 2, 4).contiguous()


def fa_prepare_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of `fa_prepare_fwd`: `[b, s, h, d]` gradients packed into `[s, b, h, 3 * d]`."""
    return torch.stack((q, k, v), dim=-2).transpose(0, 1).flatten(-2).contiguous()
