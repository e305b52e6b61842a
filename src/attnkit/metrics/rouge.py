"""ROUGE-1/2/L through Google's ``rouge-score`` package (never hand-written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attnkit.metrics._references import References, references_per_hypothesis

__all__ = ["rouge"]


def rouge(
    hypotheses: Sequence[str],
    references: References,
    *,
    rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
    use_stemmer: bool | None = None,
    tokenizer: Any = None,
) -> dict[str, float]:
    """Mean ROUGE F1 (x100) over segments, by ``rouge_score.rouge_scorer.RougeScorer``.

    Each hypothesis is scored against its reference (or, given several, the
    best-matching one per ROUGE type, ``RougeScorer.score_multi``); the F1 scores
    are averaged over segments (no bootstrap).

    Note: rouge-score's default tokenizer lowercases and keeps only ``[a-z0-9]``
    words, so it suits English; pass ``tokenizer`` (an object with
    ``tokenize(text) -> list[str]``) for other languages. As in rouge-score,
    stemming is part of the default tokenizer: a custom tokenizer does its own
    (or no) stemming, so ``use_stemmer=True`` together with ``tokenizer`` raises
    ``ValueError`` rather than being silently ignored.

    Args:
        hypotheses: system outputs, one string per segment.
        references: for each hypothesis, a reference string or a list of them.
        rouge_types: e.g. ``"rouge1"``, ``"rouge2"``, ``"rougeL"``, ``"rougeLsum"``.
        use_stemmer: Porter-stem words first (the usual setting for summarisation);
            applies to the default tokenizer only. ``None`` (default): ``True``
            without ``tokenizer``, no stemming with one.
        tokenizer: object with ``tokenize(text) -> list[str]`` replacing
            rouge-score's default tokenizer (``None``: the default).

    Returns:
        ``{rouge_type: mean F1 in 0-100}``.

    Example:
        >>> from attnkit.metrics import rouge
        >>> scores = rouge(["the cat sat"], ["the cat sat down"], rouge_types=("rouge1",))
        >>> {name: round(value, 2) for name, value in scores.items()}  # P = 1, R = 3/4
        {'rouge1': 85.71}
    """
    # imported here: rouge-score pulls in nltk (about 1 s), which no other command needs
    from rouge_score import rouge_scorer

    per_hypothesis = references_per_hypothesis(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(
        list(rouge_types), use_stemmer=_stemming(use_stemmer, tokenizer), tokenizer=tokenizer
    )
    totals = dict.fromkeys(rouge_types, 0.0)
    for hypothesis, refs in zip(hypotheses, per_hypothesis, strict=True):
        scores = scorer.score_multi(refs, hypothesis)
        for name in rouge_types:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}


def _stemming(use_stemmer: bool | None, tokenizer: Any) -> bool:
    """``use_stemmer`` resolved for rouge-score, which ignores it when given a tokenizer."""
    if tokenizer is None:
        return True if use_stemmer is None else use_stemmer
    if use_stemmer:
        raise ValueError(
            "use_stemmer=True applies only to rouge-score's default tokenizer; got a custom "
            f"tokenizer ({type(tokenizer).__name__}) too. Stem inside its tokenize(), or "
            "leave use_stemmer unset"
        )
    return False
