"""attnkit: attention mechanisms and Transformer models for learning, teaching and research."""

__version__ = "0.1.0"
