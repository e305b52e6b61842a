"""The result type of corpus metrics computed by a well-kept library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MetricResult"]


@dataclass(frozen=True)
class MetricResult:
    """A corpus score with the signature that makes it reproducible.

    Attributes:
        name: the metric, e.g. ``"BLEU"`` or ``"chrF2"``.
        score: the corpus score (0-100 for BLEU and chrF).
        signature: the library's signature string, e.g.
            ``"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"``; report it
            with the score.
        details: the score's parts (n-gram precisions, brevity penalty, lengths, ...).
        text: the library's one-line report, signature included; ``str(result)``.

    Example:
        >>> from attnkit.metrics import corpus_bleu
        >>> result = corpus_bleu(["a b c d"], ["a b c d"])
        >>> result.name, round(result.score, 2), str(result) == result.text
        ('BLEU', 100.0, True)
    """

    name: str
    score: float
    signature: str
    details: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.name} = {self.score:.2f} ({self.signature})"
