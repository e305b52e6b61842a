"""Positional encodings."""

from attnkit.nn.position.learned import LearnedPositionalEncoding
from attnkit.nn.position.sinusoidal import PositionalEncoding, sinusoidal_table

__all__ = ["LearnedPositionalEncoding", "PositionalEncoding", "sinusoidal_table"]
