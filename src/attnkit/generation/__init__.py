"""Decoding strategies over a model's step interface."""

from attnkit.generation.greedy import EncoderDecoderModel, greedy_decode

__all__ = ["EncoderDecoderModel", "greedy_decode"]
