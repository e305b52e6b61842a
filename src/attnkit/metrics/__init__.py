"""Evaluation metrics: BLEU/chrF (sacrebleu), ROUGE (rouge-score), perplexity, accuracy.

Corpus metrics are computed by the well-kept libraries and returned with their
signatures; nothing here re-implements BLEU or ROUGE.
"""

from attnkit.metrics.accuracy import sequence_accuracy, token_accuracy
from attnkit.metrics.bleu import corpus_bleu, corpus_chrf
from attnkit.metrics.perplexity import negative_log_likelihood, perplexity
from attnkit.metrics.result import MetricResult
from attnkit.metrics.rouge import rouge

__all__ = [
    "MetricResult",
    "corpus_bleu",
    "corpus_chrf",
    "negative_log_likelihood",
    "perplexity",
    "rouge",
    "sequence_accuracy",
    "token_accuracy",
]
