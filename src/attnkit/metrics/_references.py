"""Checking hypotheses and per-hypothesis references for the corpus metrics."""

from __future__ import annotations

from collections.abc import Sequence

References = Sequence[str | Sequence[str]]


def references_per_hypothesis(hypotheses: Sequence[str], references: References) -> list[list[str]]:
    """``references[i]`` (a string or a list of strings) as a list, for each hypothesis.

    Raises ``ValueError`` unless there is one non-empty entry of strings per
    hypothesis and at least one hypothesis.
    """
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise ValueError("hypotheses must be a sequence of strings (one per segment)")
    if isinstance(references, str):
        raise ValueError("references must be a sequence with one entry per hypothesis")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"references must have one entry per hypothesis: {len(hypotheses)} hypotheses; "
            f"got {len(references)} references"
        )
    if not hypotheses:
        raise ValueError("hypotheses must not be empty")
    result = []
    for i, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(
                f"references[{i}] must be a string or a non-empty list of strings; got {refs!r}"
            )
        result.append(refs)
    return result


def reference_streams(hypotheses: Sequence[str], references: References) -> list[list[str | None]]:
    """Per-hypothesis references -> sacrebleu's streams (stream ``j``: every ``j``-th reference).

    Hypotheses with fewer references get ``None`` (sacrebleu's ``nrefs:var``).
    """
    per_hypothesis = references_per_hypothesis(hypotheses, references)
    width = max(map(len, per_hypothesis))
    return [[r[j] if j < len(r) else None for r in per_hypothesis] for j in range(width)]
