"""Checks shared by the model config dataclasses (errors name what, expected and got)."""

from __future__ import annotations

from typing import Any

from attnkit.nn.attention.factory import check_self_attention
from attnkit.nn.position import POSITIONAL_KINDS

__all__ = [
    "CLASSIFIER_POOLINGS",
    "check_attention",
    "check_classifier_pooling",
    "check_divisible",
    "check_positional",
    "check_positive",
]

# What a sequence classifier reads: the first ([CLS]) token's state or the tokens' mean.
CLASSIFIER_POOLINGS = ("cls", "mean")


def check_positive(config: Any, *names: str) -> None:
    """Raise unless every field ``names`` of ``config`` is >= 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1; got {getattr(config, name)}")


def check_divisible(d_model: int, num_heads: int) -> None:
    """Raise unless the width splits evenly into heads."""
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")


def check_positional(kind: str) -> None:
    """Raise unless ``kind`` names a scheme of :func:`attnkit.nn.position_scheme`."""
    if kind not in POSITIONAL_KINDS:
        raise ValueError(f"positional must be one of {POSITIONAL_KINDS}; got {kind!r}")


def check_attention(config: Any) -> None:
    """Raise unless ``config.attention`` / ``attention_options`` name a self-attention
    variant of :func:`attnkit.nn.build_self_attention` and its settings."""
    check_self_attention(config.attention, config.attention_options)


def check_classifier_pooling(pooling: str) -> None:
    """Raise unless ``pooling`` is one of :data:`CLASSIFIER_POOLINGS`."""
    if pooling not in CLASSIFIER_POOLINGS:
        raise ValueError(
            f"classifier_pooling must be one of {CLASSIFIER_POOLINGS}; got {pooling!r}"
        )
