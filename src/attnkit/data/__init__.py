"""Data: tokenizers, datasets, batching and built-in synthetic tasks."""

from attnkit.data.synthetic import ReversalTask, Seq2SeqBatch

__all__ = ["ReversalTask", "Seq2SeqBatch"]
