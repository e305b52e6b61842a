"""Positional encodings."""

from attnkit.nn.position.alibi import ALiBi, alibi_slopes
from attnkit.nn.position.learned import LearnedPositionalEncoding, interpolate_grid_positions
from attnkit.nn.position.rotary import RotaryEmbedding, apply_rotary, rotate_half
from attnkit.nn.position.sinusoidal import PositionalEncoding, sinusoidal_table
from attnkit.nn.position.t5_bias import T5RelativePositionBias, relative_position_bucket

__all__ = [
    "ALiBi",
    "LearnedPositionalEncoding",
    "PositionalEncoding",
    "RotaryEmbedding",
    "T5RelativePositionBias",
    "alibi_slopes",
    "apply_rotary",
    "interpolate_grid_positions",
    "relative_position_bucket",
    "rotate_half",
    "sinusoidal_table",
]
