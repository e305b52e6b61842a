"""One factory for self-attention modules, so that models select the variant by config."""

from __future__ import annotations

from typing import Any

from attnkit.nn.attention.kernel import LinearAttention, PerformerAttention
from attnkit.nn.attention.local import SlidingWindowAttention
from attnkit.nn.attention.lsh import LSHAttention
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.attention.relative import RelativePositionAttention
from attnkit.nn.attention.sparse import BlockSparseAttention
from attnkit.nn.position.schemes import PositionScheme

__all__ = ["ATTENTION_KINDS", "build_self_attention", "check_self_attention"]

ATTENTION_KINDS = ("dense", "sliding_window", "block_sparse", "linear", "performer", "lsh")
_SPARSE = {
    "pattern",
    "block_size",
    "window_blocks",
    "local_blocks",
    "stride_blocks",
    "group_blocks",
    "summary_blocks",
    "global_blocks",
    "random_blocks",
    "seed",
}
_OPTIONS = {
    "dense": set(),
    "sliding_window": {"window"},
    "block_sparse": _SPARSE,
    "linear": {"chunk_size"},
    "performer": {"num_features", "chunk_size"},
    "lsh": {"num_hashes", "num_buckets", "chunk_size"},
}


def build_self_attention(
    kind: str,
    d_model: int,
    num_heads: int,
    dropout: float = 0.0,
    *,
    scheme: PositionScheme | None = None,
    options: dict[str, Any] | None = None,
    **module_options: Any,
) -> MultiHeadAttention:
    """The self-attention module of one layer.

    Args:
        kind: ``"dense"`` (every position), ``"sliding_window"`` (``options``:
            ``window``, default 256), ``"block_sparse"`` (``pattern``: sliding,
            strided, fixed, longformer or bigbird, ``block_size`` and the
            pattern's settings; see :class:`~attnkit.nn.BlockSparseAttention`),
            ``"linear"`` (``chunk_size``, default 64) or
            ``"performer"`` (``num_features``, default 256; ``chunk_size``) or
            ``"lsh"`` (``num_hashes``, ``num_buckets``, ``chunk_size``; positions
            only as absolute tables).
        d_model, num_heads, dropout: the module's sizes.
        scheme: the stack's positional scheme (its rotary, score bias or Shaw
            relative embeddings go into the module).
        module_options: :class:`MultiHeadAttention` options (``bias``,
            ``num_kv_heads``, ``head_dim``, ``scale``, ...).

    Example:
        >>> import torch
        >>> from attnkit.nn import build_self_attention
        >>> attention = build_self_attention("sliding_window", 32, 4, options={"window": 8})
        >>> type(attention).__name__, tuple(attention(torch.randn(2, 20, 32))[0].shape)
        ('SlidingWindowAttention', (2, 20, 32))
    """
    options = dict(options or {})
    check_self_attention(kind, options)
    scheme = scheme or PositionScheme("none")
    if scheme.relative is not None:
        if kind != "dense":
            raise ValueError(f"relative (Shaw) positions work with dense attention; got {kind!r}")
        return RelativePositionAttention(
            d_model, num_heads, dropout, max_relative_position=scheme.relative, **module_options
        )
    parts = {"rotary": scheme.rotary, "score_bias": scheme.score_bias, **module_options}
    if kind == "sliding_window":
        return SlidingWindowAttention(d_model, num_heads, dropout, **options, **parts)
    if kind == "block_sparse":
        return BlockSparseAttention(d_model, num_heads, dropout, **options, **parts)
    if kind == "lsh":
        if scheme.kind != "none" and scheme.absolute is None:
            raise ValueError(f"lsh attention takes no {scheme.kind!r} positions in attention")
        return LSHAttention(d_model, num_heads, dropout, **options, **module_options)
    if kind in ("linear", "performer"):
        if scheme.score_bias is not None:
            raise ValueError(f"{kind} attention has no scores for {scheme.kind!r} biases")
        kernel = LinearAttention if kind == "linear" else PerformerAttention
        return kernel(d_model, num_heads, dropout, **options, **parts)
    return MultiHeadAttention(d_model, num_heads, dropout, **parts)


def check_self_attention(kind: str, options: dict[str, Any] | None = None) -> None:
    """Raise unless ``kind`` is an attention variant and ``options`` are its settings.

    Model configs call it on construction, so a misspelled variant fails before any
    model is built.

    Example:
        >>> from attnkit.nn.attention.factory import check_self_attention
        >>> check_self_attention("sliding_window", {"window": 64})  # fine: returns None
        >>> check_self_attention("sliding_window", {"block_size": 64})
        Traceback (most recent call last):
        ...
        ValueError: attention options ... do not apply to 'sliding_window' attention (it takes ...)
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}; got {kind!r}")
    unknown = set(options or {}) - _OPTIONS[kind]
    if unknown:
        raise ValueError(
            f"attention options {sorted(unknown)} do not apply to {kind!r} attention "
            f"(it takes {sorted(_OPTIONS[kind]) or 'none'})"
        )
