"""Positional encodings."""

from attnkit.nn.position.learned import LearnedPositionalEncoding
from attnkit.nn.position.rotary import RotaryEmbedding, apply_rotary, rotate_half
from attnkit.nn.position.sinusoidal import PositionalEncoding, sinusoidal_table

__all__ = [
    "LearnedPositionalEncoding",
    "PositionalEncoding",
    "RotaryEmbedding",
    "apply_rotary",
    "rotate_half",
    "sinusoidal_table",
]
