"""Corpus BLEU and chrF through sacrebleu (never hand-written), with their signatures.

Inputs are *detokenised* text, as sacrebleu expects: it applies its own
standard tokenisation (``13a`` for BLEU by default), which is what makes
scores comparable across papers. Report the signature with the score.

References are given per hypothesis (``references[i]`` is a string or a list
of strings for ``hypotheses[i]``), not as sacrebleu's reference streams.
Hypotheses may have different numbers of references (signature ``nrefs:var``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from attnkit.metrics._references import References, reference_streams
from attnkit.metrics.result import MetricResult

__all__ = ["corpus_bleu", "corpus_chrf"]


def _result(name: str, metric: BLEU | CHRF, score: Any, details: dict[str, Any]) -> MetricResult:
    signature = str(metric.get_signature())
    return MetricResult(
        name=name,
        score=float(score.score),
        signature=signature,
        details=details,
        text=score.format(signature=signature),
    )


def corpus_bleu(
    hypotheses: Sequence[str],
    references: References,
    *,
    tokenize: str | None = None,
    lowercase: bool = False,
    **options: Any,
) -> MetricResult:
    """Corpus BLEU (Papineni et al. 2002) computed by ``sacrebleu.metrics.BLEU``.

    Args:
        hypotheses: detokenised system outputs, one string per segment.
        references: for each hypothesis, its reference string or list of references.
        tokenize: sacrebleu tokeniser (``None``: its default, ``"13a"``; ``"zh"``,
            ``"ja-mecab"``, ``"intl"``, ``"char"``, ``"none"``, ...).
        lowercase: case-insensitive BLEU.
        **options: any other ``BLEU`` argument (``smooth_method``, ``max_ngram_order``, ...).

    Returns:
        :class:`MetricResult`: ``score`` in 0-100, ``signature`` like
        ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``, and
        ``details`` with ``precisions``, ``counts``, ``totals``, ``bp``, ``sys_len``,
        ``ref_len``.

    Example:
        >>> from attnkit.metrics import corpus_bleu
        >>> result = corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
        >>> round(result.score, 2), result.signature.startswith("nrefs:1")
        (100.0, True)
    """
    streams = reference_streams(hypotheses, references)
    metric = BLEU(tokenize=tokenize, lowercase=lowercase, **options)
    score = metric.corpus_score(list(hypotheses), streams)
    details = {
        "precisions": list(score.precisions),
        "counts": list(score.counts),
        "totals": list(score.totals),
        "bp": float(score.bp),
        "sys_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
    }
    return _result("BLEU", metric, score, details)


def corpus_chrf(
    hypotheses: Sequence[str],
    references: References,
    *,
    word_order: int = 0,
    **options: Any,
) -> MetricResult:
    """Corpus chrF (Popović 2015) computed by ``sacrebleu.metrics.CHRF``.

    Args:
        hypotheses, references: as for :func:`corpus_bleu`.
        word_order: 0 for chrF, 2 for chrF++.
        **options: any other ``CHRF`` argument (``char_order``, ``beta``, ``lowercase``, ...).

    Returns:
        :class:`MetricResult` with ``score`` in 0-100, the signature, and
        ``details`` with ``char_order``, ``word_order``, ``beta``.

    Example:
        >>> from attnkit.metrics import corpus_chrf
        >>> result = corpus_chrf(["a small example"], [["a small example", "one example"]])
        >>> result.name, result.score, result.details["word_order"]
        ('chrF2', 100.0, 0)
    """
    streams = reference_streams(hypotheses, references)
    metric = CHRF(word_order=word_order, **options)
    score = metric.corpus_score(list(hypotheses), streams)
    details = {"char_order": score.char_order, "word_order": score.word_order, "beta": score.beta}
    return _result(score.name, metric, score, details)
