"""Metrics: sacrebleu / rouge-score parity and known values, perplexity, accuracies."""

import math

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from attnkit.metrics import (
    MetricResult,
    corpus_bleu,
    corpus_chrf,
    negative_log_likelihood,
    perplexity,
    rouge,
    sequence_accuracy,
    token_accuracy,
)

HYPOTHESES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "Hello, world — it's 3 o'clock.",
    "Nothing in common here",
]
REFERENCES = [
    "The cat sat on a mat.",
    "The quick brown fox jumped over the lazy dog.",
    "Hello world, it is 3 o'clock.",
    "Completely different words",
]

# ---------------------------------------------------------------------- BLEU / chrF


def test_bleu_equals_sacrebleu_called_directly():
    result = corpus_bleu(HYPOTHESES, REFERENCES)
    direct = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES])
    assert isinstance(result, MetricResult) and result.name == "BLEU"
    assert result.score == pytest.approx(direct.score, abs=1e-12)
    assert 0 < result.score < 100
    assert result.details["counts"] == list(direct.counts)
    assert result.details["bp"] == pytest.approx(direct.bp)
    lower = corpus_bleu(HYPOTHESES, REFERENCES, lowercase=True, tokenize="intl")
    direct = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES], lowercase=True, tokenize="intl")
    assert lower.score == pytest.approx(direct.score, abs=1e-12)


def test_bleu_known_values():
    assert corpus_bleu(
        ["the cat sat on the mat"], ["the cat sat on the mat"]
    ).score == pytest.approx(100.0)
    assert corpus_bleu(["a b c d"], ["e f g h"]).score == 0.0
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (BP = 1): geometric mean.
    result = corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert result.score == pytest.approx(expected, abs=1e-9)
    assert result.details["precisions"] == pytest.approx([500 / 6, 60, 50, 100 / 3])


def test_bleu_signature_is_exposed_and_printed():
    result = corpus_bleu(HYPOTHESES, REFERENCES)
    for part in (
        "nrefs:1",
        "case:mixed",
        "tok:13a",
        "smooth:exp",
        f"version:{sacrebleu.__version__}",
    ):
        assert part in result.signature
    assert result.signature in str(result) and str(result).startswith("BLEU")
    assert "case:lc" in corpus_bleu(HYPOTHESES, REFERENCES, lowercase=True).signature
    two = corpus_bleu(HYPOTHESES, [[r, r.lower()] for r in REFERENCES])
    assert "nrefs:2" in two.signature
    var = corpus_bleu(HYPOTHESES[:2], [REFERENCES[0], [REFERENCES[1], HYPOTHESES[1]]])
    assert "nrefs:var" in var.signature


def test_bleu_multiple_references_per_hypothesis():
    refs = [[r, h] for r, h in zip(REFERENCES, HYPOTHESES, strict=True)]
    assert corpus_bleu(HYPOTHESES, refs).score == pytest.approx(100.0)
    streams = [REFERENCES, [r.upper() for r in REFERENCES]]
    direct = sacrebleu.corpus_bleu(HYPOTHESES, streams)
    ours = corpus_bleu(HYPOTHESES, [[r, r.upper()] for r in REFERENCES])
    assert ours.score == pytest.approx(direct.score, abs=1e-12)


def test_chrf_equals_sacrebleu_and_known_values():
    result = corpus_chrf(HYPOTHESES, REFERENCES)
    assert result.score == pytest.approx(
        sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score, abs=1e-12
    )
    assert result.name == "chrF2" and "nrefs:1" in result.signature and "nc:6" in result.signature
    plus = corpus_chrf(HYPOTHESES, REFERENCES, word_order=2)
    direct = sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES], word_order=2)
    assert plus.name == "chrF2++" and plus.score == pytest.approx(direct.score, abs=1e-12)
    assert corpus_chrf(["same text"], ["same text"]).score == pytest.approx(100.0)


@pytest.mark.parametrize("metric", [corpus_bleu, corpus_chrf, rouge])
def test_corpus_metric_input_errors(metric):
    with pytest.raises(ValueError, match="4 hypotheses; got 3 references"):
        metric(HYPOTHESES, REFERENCES[:3])
    with pytest.raises(ValueError, match="hypotheses must be a sequence of strings"):
        metric("a single string", ["a single string"])
    with pytest.raises(ValueError, match="references must be a sequence with one entry"):
        metric(["x"], "x")
    with pytest.raises(ValueError, match="hypotheses must not be empty"):
        metric([], [])
    with pytest.raises(ValueError, match=r"references\[1\] must be a string or a non-empty list"):
        metric(["a", "b"], ["a", []])


# ---------------------------------------------------------------------- ROUGE


def test_rouge_known_values():
    scores = rouge(["the cat sat on the mat"], ["the cat is running on the mat"])
    # unigrams: 5 shared of 6 and 7 -> F1 = 10/13; bigrams: 3 of 5 and 6 -> 6/11; LCS = 5.
    assert scores == pytest.approx({"rouge1": 1000 / 13, "rouge2": 600 / 11, "rougeL": 1000 / 13})
    assert rouge(["identical words here"], ["identical words here"]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    )


def test_rouge_stemming_mean_over_segments_and_multiple_references():
    assert rouge(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)
    assert rouge(["cats running"], ["cat runs"], use_stemmer=False)["rouge1"] == 0.0
    mean = rouge(["a b", "c d"], ["a b", "x y"], rouge_types=["rouge1"])
    assert mean == {"rouge1": pytest.approx(50.0)}
    best = rouge(["a b c"], [["x y z", "a b c"]], rouge_types=["rouge2"])
    assert best == {"rouge2": pytest.approx(100.0)}


class _WhitespaceTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return text.lower().split()


def test_rouge_stemmer_with_custom_tokenizer_is_an_error_not_ignored():
    hyp, ref = ["the cats were running"], ["the cat was running"]
    with pytest.raises(ValueError, match="use_stemmer=True applies only to rouge-score's default"):
        rouge(hyp, ref, rouge_types=("rouge1",), use_stemmer=True, tokenizer=_WhitespaceTokenizer())
    # unset or False: the tokenizer's own tokens, unstemmed ("the", "running" shared: 2 of 4)
    for use_stemmer in (None, False):
        scores = rouge(
            hyp,
            ref,
            rouge_types=("rouge1",),
            use_stemmer=use_stemmer,
            tokenizer=_WhitespaceTokenizer(),
        )
        assert scores == {"rouge1": pytest.approx(50.0)}
    # default tokenizer stems: cats -> cat shared too (3 of 4)
    assert rouge(hyp, ref, rouge_types=("rouge1",))["rouge1"] == pytest.approx(75.0)


def test_rouge_equals_rouge_score_called_directly():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(r, h) for h, r in zip(HYPOTHESES, REFERENCES, strict=True)]
    ours = rouge(HYPOTHESES, REFERENCES)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * sum(d[name].fmeasure for d in direct) / len(direct)
        assert ours[name] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------- perplexity


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    logits = torch.zeros(3, 5, 37)
    targets = torch.randint(1, 37, (3, 5))
    targets[0, 3:] = 0
    total_nll, tokens = negative_log_likelihood(logits, targets, pad_id=0)
    assert tokens == 13
    assert total_nll == pytest.approx(13 * math.log(37))
    assert perplexity(total_nll, tokens) == pytest.approx(37.0, rel=1e-12)
    assert negative_log_likelihood(logits, targets)[1] == 15


def test_negative_log_likelihood_skips_ignore_index_labels():
    logits = torch.zeros(1, 3, 8)
    targets = torch.tensor([[1, 2, -100]])  # -100: the collators' ignore_index
    total_nll, tokens = negative_log_likelihood(logits, targets, pad_id=-100)
    assert tokens == 2
    assert total_nll == pytest.approx(2 * math.log(8))
    with pytest.raises(ValueError, match=r"token ids in \[0, 8\); got -100"):
        negative_log_likelihood(logits, targets)
    with pytest.raises(ValueError, match=r"token ids in \[0, 8\); got 8"):
        negative_log_likelihood(logits, torch.tensor([[1, 8, 0]]), pad_id=0)


def test_perplexity_known_values_and_errors():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(2), 10) == pytest.approx(2.0)
    assert perplexity(torch.tensor(4.0), torch.tensor(2)) == pytest.approx(math.exp(2))
    assert perplexity(1e6, 1) == math.inf
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p(token 1) = 3/4
    total_nll, tokens = negative_log_likelihood(logits, torch.tensor([[1]]))
    assert perplexity(total_nll, tokens) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="total_tokens must be > 0; got 0"):
        perplexity(1.0, 0)
    with pytest.raises(ValueError, match="total_nll must be a non-negative"):
        perplexity(-1.0, 3)
    with pytest.raises(ValueError, match=r"logits must have shape targets.shape \+ \(V,\)"):
        negative_log_likelihood(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


# ---------------------------------------------------------------------- accuracy

PAD = 0
TARGETS = torch.tensor([[5, 6, 7, 2], [5, 2, 0, 0], [3, 4, 2, 0]])


def test_token_accuracy_skips_padding():
    predicted = torch.tensor([[5, 6, 9, 2], [5, 2, 7, 7], [4, 4, 2, 0]])
    assert token_accuracy(predicted, TARGETS, PAD) == pytest.approx(7 / 9)
    assert token_accuracy(predicted, TARGETS) == pytest.approx(8 / 12)
    logits = torch.nn.functional.one_hot(predicted, 10).float()
    assert token_accuracy(logits, TARGETS, PAD) == pytest.approx(7 / 9)
    short = torch.tensor([[5, 6], [5, 2], [3, 4]])  # generated ids are padded to T
    assert token_accuracy(short, TARGETS, PAD) == pytest.approx(6 / 9)
    assert token_accuracy(torch.tensor([[5, 6, 7, 2, 9, 9]]), TARGETS[:1], PAD) == 1.0
    with pytest.raises(ValueError, match="no tokens to score"):
        token_accuracy(TARGETS, torch.zeros_like(TARGETS), PAD)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, T, V\)"):
        token_accuracy(logits[:, :3], TARGETS, PAD)
    with pytest.raises(ValueError, match=r"predictions must be ids \(B, L\) with B = 3"):
        token_accuracy(predicted[:2], TARGETS, PAD)


def test_sequence_accuracy_with_padding():
    exact = torch.tensor([[5, 6, 7, 2, 0, 0], [5, 2, 0, 0, 0, 0], [3, 4, 2, 0, 0, 0]])
    assert sequence_accuracy(exact, TARGETS, PAD) == 1.0
    assert sequence_accuracy(exact[:, :3], TARGETS[:, :3], PAD) == 1.0
    extra = exact.clone()
    extra[1, 2] = 9  # a token generated after the target ended
    assert sequence_accuracy(extra, TARGETS, PAD) == pytest.approx(2 / 3)
    assert sequence_accuracy(exact[:, :2], TARGETS, PAD) == pytest.approx(1 / 3)
    # teacher-forced logits: only non-pad target positions matter
    logits = torch.nn.functional.one_hot(torch.where(TARGETS == PAD, 9, TARGETS), 10).float()
    assert sequence_accuracy(logits, TARGETS, PAD) == 1.0
    logits[2, 0] = torch.nn.functional.one_hot(torch.tensor(8), 10).float()
    assert sequence_accuracy(logits, TARGETS, PAD) == pytest.approx(2 / 3)
