"""The "fused" and "math" attention backends.

Every backend takes already-validated inputs:

* ``query (B, H, Tq, D)``, ``key (B, Hkv, Tk, D)``, ``value (B, Hkv, Tk, Dv)``
  with ``H % Hkv == 0``;
* ``mask``: bool, broadcastable to ``(B, H, Tq, Tk)``, True = may attend, or None;
* ``bias``: float, broadcastable to ``(B, H, Tq, Tk)``, or None;
* ``causal``: ``None``, ``"top_left"`` or ``"bottom_right"``;
* ``dropout_p``, ``scale`` (a float), ``need_weights``;

and returns ``(output (B, H, Tq, Dv), weights (B, H, Tq, Tk) or None)``. A query
whose keys are all masked yields a zero output row and zero weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype, finite_bias, repeat_kv
from attnkit.functional.dropout import dropout
from attnkit.functional.masks import CausalAlignment, combine_masks, create_causal_mask
from attnkit.functional.softmax import masked_softmax


def _with_causal(
    mask: Tensor | None, causal: CausalAlignment | None, query: Tensor, key: Tensor
) -> Tensor | None:
    """Fold a causal constraint into ``mask`` (materialised as ``(1, 1, Tq, Tk)``)."""
    if causal is None:
        return mask
    causal_mask = create_causal_mask(
        query.size(-2), key.size(-2), alignment=causal, device=query.device
    )
    return combine_masks(mask, causal_mask)


def fused_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: CausalAlignment | None,
    dropout_p: float,
    scale: float,
    need_weights: bool,
) -> tuple[Tensor, None]:
    """``torch.nn.functional.scaled_dot_product_attention`` (flash / efficient / cuDNN kernels)."""
    del need_weights  # the dispatcher never routes weight requests here
    if dropout_p > 0 and query.device.type == "cpu":
        # Torch's CPU kernels have no fused dropout: it would run its own math path with
        # bernoulli_; attnkit's math path does the same products with its cheaper dropout.
        return math_attention(
            query,
            key,
            value,
            mask=mask,
            bias=bias,
            causal=causal,
            dropout_p=dropout_p,
            scale=scale,
            need_weights=False,
        )  # type: ignore[return-value]  # weights are None without need_weights
    gqa = {"enable_gqa": True} if query.size(1) != key.size(1) else {}
    plain_causal = causal == "top_left" or query.size(-2) == key.size(-2)
    if causal is not None and mask is None and bias is None and plain_causal:
        out = F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout_p, is_causal=True, scale=scale, **gqa
        )
        return out, None

    mask = _with_causal(mask, causal, query, key)
    row_has_keys = None
    if mask is not None:
        # Unmask rows with no visible key so the kernel never sees an empty
        # softmax, then zero those rows of the output.
        row_has_keys = mask.any(dim=-1, keepdim=True)
        mask = mask | ~row_has_keys
    attn_mask = mask
    if bias is not None:
        attn_mask = finite_bias(bias, query.dtype)
        blocked = _blocked_rows(bias)
        if blocked is not None:  # a zero bias and query row: constant scores, uniform weights
            attn_mask = attn_mask.masked_fill(blocked, 0.0)
            query = query.masked_fill(blocked, 0.0)
        if mask is not None:
            # -inf, not the dtype's minimum: a clamped -inf bias also sits at the minimum,
            # and a masked key must never tie with a visible one.
            attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, **gqa
    )
    if row_has_keys is not None:
        out = out.masked_fill(~row_has_keys, 0.0)
    return out, None


def _blocked_rows(bias: Tensor) -> Tensor | None:
    """Rows ``(..., Tq, 1)`` of ``bias`` that are ``-inf`` (or float32's minimum) on every
    key, or ``None`` where there are none (checked on the CPU only: elsewhere the check
    would cost a device sync, so the rows are always returned).

    The math backend computes in float32 and clamps such a row to float32's minimum,
    which absorbs every score: uniform weights. Torch's kernel does not: it clamps
    float16 biases to float16's minimum, where a score still counts, and its backward
    loses ``log(n)`` beside float32's minimum. Found on the bias's own shape (often
    ``(1, H, Tq, Tk)``), before any cast.
    """
    blocked = (bias <= torch.finfo(torch.float32).min).all(dim=-1, keepdim=True)
    quick = bias.device.type == "cpu" and not torch.compiler.is_compiling()
    return None if quick and not bool(blocked.any()) else blocked


def math_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: CausalAlignment | None,
    dropout_p: float,
    scale: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Readable reference: softmax(Q K^T * scale + bias, masked) V.

    Scores and softmax are computed in float32 for float16/bfloat16 inputs.
    The returned weights are the attention distribution before dropout.
    """
    weights = attention_weights(query, key, mask=mask, bias=bias, causal=causal, scale=scale)
    v = repeat_kv(value, query.size(1) // value.size(1)).to(weights.dtype)
    dropped = dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = (dropped @ v).to(query.dtype)
    return out, (weights.to(query.dtype) if need_weights else None)


def attention_weights(
    query: Tensor,
    key: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: CausalAlignment | None,
    scale: float,
) -> Tensor:
    """``softmax(Q K^T * scale + bias)`` over the visible keys, ``(B, H, Tq, Tk)``.

    Computed in float32 for float16/bfloat16 inputs (returned in that compute
    dtype). Masked keys get exactly zero weight; a row with no visible key is
    all zeros.
    """
    dtype = compute_dtype(query.dtype)
    q = query.to(dtype)
    k = repeat_kv(key, query.size(1) // key.size(1)).to(dtype)
    scores = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        scores = (scores + bias.to(dtype)).clamp_min(torch.finfo(dtype).min)
    return masked_softmax(scores, _with_causal(mask, causal, query, key))
