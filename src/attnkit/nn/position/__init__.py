"""Positional encodings."""

from attnkit.nn.position.alibi import ALiBi, alibi_slopes
from attnkit.nn.position.learned import LearnedPositionalEncoding, interpolate_grid_positions
from attnkit.nn.position.rotary import RotaryEmbedding, apply_rotary, rotate_half
from attnkit.nn.position.schemes import POSITIONAL_KINDS, PositionScheme, position_scheme
from attnkit.nn.position.sinusoidal import PositionalEncoding, sinusoidal_table
from attnkit.nn.position.t5_bias import T5RelativePositionBias, relative_position_bucket

__all__ = [
    "POSITIONAL_KINDS",
    "ALiBi",
    "LearnedPositionalEncoding",
    "PositionScheme",
    "PositionalEncoding",
    "RotaryEmbedding",
    "T5RelativePositionBias",
    "alibi_slopes",
    "apply_rotary",
    "interpolate_grid_positions",
    "position_scheme",
    "relative_position_bucket",
    "rotate_half",
    "sinusoidal_table",
]
