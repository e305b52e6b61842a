"""Attention masks in attnkit's one convention.

Every mask is a boolean tensor where ``True`` means "may attend / is a real
token" (the convention of :func:`torch.nn.functional.scaled_dot_product_attention`),
broadcastable to ``(B, H, Tq, Tk)``. Additive float biases travel separately.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

CausalAlignment = Literal["top_left", "bottom_right"]

__all__ = [
    "CausalAlignment",
    "combine_masks",
    "create_causal_mask",
    "create_padding_mask",
    "create_sliding_window_mask",
    "from_torch_mha_masks",
    "key_padding_mask",
    "mask_to_additive",
    "positions_from_mask",
]


def create_padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """Key-padding mask from token ids.

    Args:
        tokens: ``(B, S)`` integer token ids.
        pad_id: the id of the padding token.

    Returns:
        bool ``(B, 1, 1, S)``, ``True`` at real tokens.

    Example:
        >>> import torch
        >>> from attnkit.functional import create_padding_mask
        >>> create_padding_mask(torch.tensor([[5, 7, 0], [4, 0, 0]]), pad_id=0).int().tolist()
        [[[[1, 1, 0]]], [[[1, 0, 0]]]]
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, S); got {tuple(tokens.shape)}")
    return (tokens != pad_id)[:, None, None, :]


def key_padding_mask(mask: Tensor, tokens: Tensor, name: str = "mask") -> Tensor:
    """A mask for attention over ``tokens (B, S)`` in attnkit's 4-D layout.

    A ``(B, S)`` bool or integer mask, ``True`` (or 1) at real tokens, as Hugging Face
    users pass it, becomes bool ``(B, 1, 1, S)``; a 4-D bool mask whose
    batch is 1 or ``B`` and whose last size is ``S`` is returned as it is. Anything
    else raises a ``ValueError`` naming ``name``.

    Example:
        >>> import torch
        >>> from attnkit.functional import key_padding_mask
        >>> tokens = torch.tensor([[5, 7, 0], [4, 0, 0]])
        >>> tuple(key_padding_mask(tokens != 0, tokens).shape)
        (2, 1, 1, 3)
    """
    batch, length = tokens.shape
    # Not float: an additive mask (0 / -inf) would read the wrong way round as bool.
    if mask.dim() == 2 and tuple(mask.shape) == (batch, length) and not mask.is_floating_point():
        return mask.bool()[:, None, None, :]
    batch_fits = mask.dim() == 4 and mask.size(0) in (1, batch)
    if batch_fits and mask.dtype == torch.bool and mask.size(-1) == length:
        return mask
    raise ValueError(
        f"{name} must be (B, S) = {(batch, length)}, True at real tokens, or a bool mask "
        f"(B or 1, 1 or H, 1 or Tq, S = {length}); got {mask.dtype} {tuple(mask.shape)}"
    )


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids ``(B, T)`` counting each row's real tokens: ``cumsum(mask) - 1``.

    ``attention_mask (B, T)`` is bool or 0/1, true at real tokens. Pads get 0.
    With left padding, a prompt gets the positions it would have alone.

    Example:
        >>> import torch
        >>> from attnkit.functional import positions_from_mask
        >>> positions_from_mask(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()  # left padding
        [[0, 0, 1], [0, 1, 2]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def create_causal_mask(
    query_len: int,
    key_len: int | None = None,
    *,
    alignment: CausalAlignment = "top_left",
    device: torch.device | str | None = None,
) -> Tensor:
    """Causal (lower-triangular) mask.

    With ``key_len == query_len`` (the default) both alignments agree. With a
    query block at the end of a longer key sequence (KV-cache decoding) use
    ``alignment="bottom_right"``: query ``i`` then sits at absolute position
    ``key_len - query_len + i`` and sees every key up to it.

    Returns:
        bool ``(1, 1, Tq, Tk)``, ``True`` where the query may attend.

    Example:
        >>> from attnkit.functional import create_causal_mask
        >>> create_causal_mask(3)[0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
        >>> create_causal_mask(1, 3, alignment="bottom_right")[0, 0].int().tolist()  # a new token
        [[1, 1, 1]]
    """
    key_len = query_len if key_len is None else key_len
    if alignment not in ("top_left", "bottom_right"):
        raise ValueError(f"alignment must be 'top_left' or 'bottom_right'; got {alignment!r}")
    offset = key_len - query_len if alignment == "bottom_right" else 0
    query_pos = torch.arange(query_len, device=device)[:, None] + offset
    key_pos = torch.arange(key_len, device=device)[None, :]
    return (key_pos <= query_pos)[None, None]


def create_sliding_window_mask(
    query_len: int,
    key_len: int | None = None,
    *,
    window: int,
    causal: bool = True,
    alignment: CausalAlignment = "bottom_right",
    device: torch.device | str | None = None,
) -> Tensor:
    """Local attention: each query sees keys within ``window`` positions.

    Causal windows see the ``window`` most recent keys including their own
    position; symmetric windows (``causal=False``) see ``window`` keys on each
    side. Returns bool ``(1, 1, Tq, Tk)``.

    Example:
        >>> from attnkit.functional import create_sliding_window_mask
        >>> create_sliding_window_mask(4, window=2)[0, 0].int().tolist()  # own and previous key
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    if alignment not in ("top_left", "bottom_right"):
        raise ValueError(f"alignment must be 'top_left' or 'bottom_right'; got {alignment!r}")
    key_len = query_len if key_len is None else key_len
    offset = key_len - query_len if alignment == "bottom_right" else 0
    query_pos = torch.arange(query_len, device=device)[:, None] + offset
    key_pos = torch.arange(key_len, device=device)[None, :]
    distance = query_pos - key_pos
    if causal:
        allowed = (distance >= 0) & (distance < window)
    else:
        allowed = distance.abs() <= window
    return allowed[None, None]


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of any number of boolean masks (``None`` entries are ignored).

    The result broadcasts the inputs, e.g. a padding mask ``(B, 1, 1, S)`` and
    a causal mask ``(1, 1, T, S)`` give ``(B, 1, T, S)``.

    Example:
        >>> import torch
        >>> from attnkit.functional import combine_masks, create_causal_mask, create_padding_mask
        >>> padding = create_padding_mask(torch.tensor([[5, 7, 0]]), pad_id=0)  # (1, 1, 1, 3)
        >>> combine_masks(padding, create_causal_mask(3))[0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    """
    present = [m for m in masks if m is not None]
    for i, m in enumerate(present):
        if m.dtype != torch.bool:
            raise ValueError(f"combine_masks expects bool masks; mask {i} has dtype {m.dtype}")
    if not present:
        return None
    combined = present[0]
    for m in present[1:]:
        combined = combined & m
    return combined


def from_torch_mha_masks(
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    *,
    num_heads: int | None = None,
) -> Tensor | None:
    """Convert ``torch.nn.MultiheadAttention`` masks to attnkit's convention.

    ``nn.MultiheadAttention`` uses the opposite boolean meaning (``True`` =
    *blocked*) and a separate key-padding mask of shape ``(B, S)``; float masks
    there are additive (``-inf`` = blocked).

    Args:
        attn_mask: ``(Tq, Tk)`` or ``(B * num_heads, Tq, Tk)``, bool (True =
            blocked) or float (additive, ``-inf`` = blocked).
        key_padding_mask: ``(B, S)``, bool (True = padding) or float additive.
        num_heads: needed to unflatten a 3-D ``attn_mask``.

    Returns:
        bool mask broadcastable to ``(B, H, Tq, Tk)`` with True = may attend,
        or ``None`` when neither mask is given.

    Example:
        >>> import torch
        >>> from attnkit.functional import from_torch_mha_masks
        >>> key_padding_mask = torch.tensor([[False, False, True]])  # torch: True = padding
        >>> from_torch_mha_masks(key_padding_mask=key_padding_mask).int().tolist()
        [[[[1, 1, 0]]]]
    """
    allowed_attn = None
    if attn_mask is not None:
        blocked = _mha_blocked("attn_mask", attn_mask)
        if blocked.dim() == 2:
            allowed_attn = ~blocked[None, None]
        elif blocked.dim() == 3:
            if num_heads is None:
                raise ValueError("num_heads is required to convert a 3-D attn_mask (B * H, Tq, Tk)")
            if blocked.size(0) % num_heads != 0:
                raise ValueError(
                    f"attn_mask must have shape (B * H, Tq, Tk) with a first dim divisible by "
                    f"num_heads={num_heads}; got {tuple(attn_mask.shape)}"
                )
            allowed_attn = ~blocked.unflatten(0, (-1, num_heads))
        else:
            raise ValueError(
                "attn_mask must have shape (Tq, Tk) or (B * H, Tq, Tk); "
                f"got {tuple(attn_mask.shape)}"
            )
    allowed_keys = None
    if key_padding_mask is not None:
        if key_padding_mask.dim() != 2:
            raise ValueError(
                f"key_padding_mask must have shape (B, S); got {tuple(key_padding_mask.shape)}"
            )
        padded = _mha_blocked("key_padding_mask", key_padding_mask)
        allowed_keys = ~padded[:, None, None, :]
    return combine_masks(allowed_attn, allowed_keys)


def _mha_blocked(name: str, mask: Tensor) -> Tensor:
    """True = blocked, from an MHA bool mask or an additive float mask of only 0 / -inf.

    Any other additive value is a bias that a bool mask cannot carry; dropping it
    silently (or reading -1e9 as "allowed") would change the attention.
    """
    if mask.dtype == torch.bool:
        return mask
    blocked = torch.isneginf(mask)
    if not bool((blocked | (mask == 0)).all()):
        raise ValueError(
            f"{name} as a float (additive) mask may only hold 0 or -inf to convert to a bool "
            "mask; got other values. Pass additive scores as attn_bias instead."
        )
    return blocked


def mask_to_additive(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Additive form of a bool mask: 0 where allowed, the dtype's minimum where not.

    Uses ``torch.finfo(dtype).min`` rather than ``-inf`` or ``-1e9`` so that the
    result is finite in every dtype (``-1e9`` overflows float16).

    Example:
        >>> import torch
        >>> from attnkit.functional import mask_to_additive
        >>> additive = mask_to_additive(torch.tensor([True, False]))
        >>> additive[0].item(), additive[1].item() == torch.finfo(torch.float32).min
        (0.0, True)
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool; got {mask.dtype}")
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(~mask, torch.finfo(dtype).min)
