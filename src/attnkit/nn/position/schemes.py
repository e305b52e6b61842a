"""One factory for every positional scheme, so that models select them by config.

A scheme is up to three parts, each optional:

- ``absolute``: a table added to the token embeddings (sinusoidal, learned);
  called as ``absolute(x, offset, positions)``;
- ``rotary``: a :class:`~attnkit.nn.QueryKeyTransform` for self-attention;
- ``score_bias``: a :class:`~attnkit.nn.ScoreBias` for self-attention (ALiBi, T5);
- ``relative``: Shaw et al.'s clipping distance, which needs its own attention
  module (:class:`~attnkit.nn.RelativePositionAttention`).

:func:`attnkit.nn.build_self_attention` builds a stack's self-attention from
its scheme and the attention variant.

A model builds one scheme per stack (``causal=True`` for decoders) and hands
``rotary`` / ``score_bias`` to every self-attention module of that stack, so
the parts are shared by its layers (as T5 shares its bias table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from attnkit.nn.position.alibi import ALiBi
from attnkit.nn.position.learned import LearnedPositionalEncoding
from attnkit.nn.position.rotary import RotaryEmbedding
from attnkit.nn.position.sinusoidal import PositionalEncoding
from attnkit.nn.position.t5_bias import T5RelativePositionBias

__all__ = ["POSITIONAL_KINDS", "PositionScheme", "position_scheme"]

POSITIONAL_KINDS = ("sinusoidal", "learned", "rotary", "alibi", "t5", "relative", "none")
_OPTIONS = {
    "rotary": {"base", "scaling", "factor"},
    "t5": {"num_buckets", "max_distance"},
    "relative": {"max_relative_position"},
}


@dataclass
class PositionScheme:
    """The parts of one stack's positional scheme (see the module docstring).

    Example:
        >>> from attnkit.nn import position_scheme
        >>> sizes = dict(d_model=16, num_heads=2, head_dim=8, max_len=32, causal=True)
        >>> scheme = position_scheme("alibi", **sizes)
        >>> scheme.kind, scheme.absolute, type(scheme.score_bias).__name__
        ('alibi', None, 'ALiBi')
    """

    kind: str
    absolute: nn.Module | None = None
    rotary: nn.Module | None = None
    score_bias: nn.Module | None = None
    relative: int | None = None


def position_scheme(
    kind: str,
    *,
    d_model: int,
    num_heads: int,
    head_dim: int,
    max_len: int,
    causal: bool,
    options: dict[str, Any] | None = None,
) -> PositionScheme:
    """Build the ``kind`` scheme for a stack of ``num_heads``-head attention.

    Args:
        kind: one of :data:`POSITIONAL_KINDS`.
        d_model, max_len: sizes of absolute tables.
        head_dim: rotary's rotated size.
        causal: a decoder stack (ALiBi one-sided, T5 buckets for the past only).
        options: kind-specific settings: rotary ``base``, ``scaling``,
            ``factor``; t5 ``num_buckets``, ``max_distance``.

    Example:
        >>> from attnkit.nn import position_scheme
        >>> sizes = dict(d_model=16, num_heads=2, head_dim=8, max_len=32, causal=True)
        >>> scheme = position_scheme("rotary", **sizes)
        >>> type(scheme.rotary).__name__, scheme.score_bias
        ('RotaryEmbedding', None)
    """
    options = dict(options or {})
    if kind not in POSITIONAL_KINDS:
        raise ValueError(f"positional must be one of {POSITIONAL_KINDS}; got {kind!r}")
    unknown = set(options) - _OPTIONS.get(kind, set())
    if unknown:
        raise ValueError(
            f"position options {sorted(unknown)} do not apply to {kind!r} positions "
            f"(it takes {sorted(_OPTIONS.get(kind, set())) or 'none'})"
        )
    if kind == "sinusoidal":
        return PositionScheme(kind, absolute=PositionalEncoding(d_model, max_len))
    if kind == "learned":
        return PositionScheme(kind, absolute=LearnedPositionalEncoding(d_model, max_len))
    if kind == "rotary":
        return PositionScheme(kind, rotary=RotaryEmbedding(head_dim, **options))
    if kind == "alibi":
        return PositionScheme(kind, score_bias=ALiBi(num_heads, causal=causal))
    if kind == "t5":
        bias = T5RelativePositionBias(num_heads, bidirectional=not causal, **options)
        return PositionScheme(kind, score_bias=bias)
    if kind == "relative":
        return PositionScheme(kind, relative=options.get("max_relative_position", 32))
    return PositionScheme(kind)
