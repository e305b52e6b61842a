"""Beam search: exact on enumerable models, greedy at beam size 1, cache-independent.

References: every possible output of a tiny random Transformer, scored by
its teacher-forced full forward pass; an uncached decoder rerunning
``model(src, tokens)`` for every token; hand-computed scores of a scripted model.
"""

import itertools
import math
import re

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnkit.generation import (
    BeamSearchOutput,
    EncoderDecoderAdapter,
    beam_search,
    generate,
    greedy_decode,
)
from attnkit.models import Transformer
from generation_helpers import BOS, EOS, PAD, FullForward, random_model

pytestmark = pytest.mark.usefixtures("single_thread")

KW = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)


class Scripted:
    """DecodingModel for one input whose next-token probabilities are a table of prefixes."""

    def __init__(self, table: dict[tuple[int, ...], list[float]], default: list[float]) -> None:
        self.table, self.default = table, default

    batch_size = 1
    device = torch.device("cpu")

    def _logits(self, tokens: Tensor) -> Tensor:
        rows = [self.table.get(tuple(row.tolist()[1:]), self.default) for row in tokens]
        return torch.tensor(rows, dtype=torch.float64).log()

    def start(self, num_beams, max_new_tokens, *, bos_id):
        state = {"tokens": torch.full((num_beams, 1), bos_id)}
        return state, self._logits(state["tokens"])

    def step(self, state, tokens):
        state["tokens"] = torch.cat([state["tokens"], tokens], dim=1)
        return self._logits(state["tokens"])

    def reorder(self, state, indices):
        state["tokens"] = state["tokens"][indices]


def _sources(batch: int, vocab: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (batch, 6), generator=gen)
    lengths = torch.randint(1, 7, (batch,), generator=gen)
    lengths[0] = 6
    return src.masked_fill(torch.arange(6) >= lengths[:, None], PAD)


def _trim(seq: Tensor) -> tuple[int, ...]:
    """A padded output row as a tuple, up to its eos (or its end)."""
    tokens = seq.tolist()
    return tuple(tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens)


def _all_outputs(vocab: int, max_len: int) -> list[tuple[int, ...]]:
    """Every possible output: ends at the first eos, or runs to ``max_len`` without one."""
    other = [t for t in range(vocab) if t != EOS]
    outputs = []
    for length in range(1, max_len + 1):
        outputs += [(*p, EOS) for p in itertools.product(other, repeat=length - 1)]
    outputs += list(itertools.product(other, repeat=max_len))
    return outputs


def _log_probs(model: Transformer, src_row: Tensor, outputs: list[tuple[int, ...]]) -> Tensor:
    """Total log-probability of each output given ``src_row (S,)``, by teacher forcing."""
    width = max(map(len, outputs))
    targets = torch.tensor([list(o) + [PAD] * (width - len(o)) for o in outputs])
    inputs = torch.cat([torch.full((len(outputs), 1), BOS), targets[:, :-1]], dim=1)
    all_real = torch.ones(1, 1, 1, width, dtype=torch.bool)
    src = src_row[src_row != PAD][None].expand(len(outputs), -1)
    with torch.no_grad():
        log_p = model(src, inputs, tgt_mask=all_real).log_softmax(-1)
    token_log_p = log_p.gather(-1, targets[..., None])[..., 0]
    lengths = torch.tensor([len(o) for o in outputs])
    return token_log_p.masked_fill(torch.arange(width) >= lengths[:, None], 0.0).sum(1)


def _true_ranking(model, src_row, vocab, max_len, length_penalty):
    outputs = _all_outputs(vocab, max_len)
    lengths = torch.tensor([len(o) for o in outputs], dtype=torch.float64)
    scores = _log_probs(model, src_row, outputs) / lengths**length_penalty
    order = scores.argsort(descending=True, stable=True)
    return [outputs[i] for i in order], scores[order]


def _check_output(out: BeamSearchOutput, batch: int, n: int) -> None:
    assert out.sequences.shape[:2] == (batch, n) and out.scores.shape == (batch, n)
    assert torch.all(out.scores[:, :-1] >= out.scores[:, 1:])  # n-best sorted
    for b, k in itertools.product(range(batch), range(n)):
        length, row = int(out.lengths[b, k]), out.sequences[b, k]
        assert torch.all(row[length:] == PAD)
        assert len(_trim(row)) == length


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("length_penalty", "early_stopping"), [(1.0, True), (0.0, False), (2.0, False), (-0.5, True)]
)
def test_large_beam_finds_exact_n_best_among_all_outputs(length_penalty, early_stopping):
    vocab, max_len, n = 5, 4, 6
    model, src = random_model(vocab), _sources(2, vocab)
    # 5 ** 4 = 625 > 4 ** 3 * 5 = 320: every candidate of every step stays in the beam.
    out = beam_search(
        model,
        src,
        beam_size=320,
        max_new_tokens=max_len,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=n,
        **KW,
    )
    _check_output(out, 2, n)
    for b in range(2):
        outputs, scores = _true_ranking(model, src[b], vocab, max_len, length_penalty)
        assert scores[n - 1] - scores[n] > 1e-9  # the n-best set is well defined
        assert [_trim(row) for row in out.sequences[b]] == outputs[:n]
        torch.testing.assert_close(out.scores[b], scores[:n], rtol=0, atol=1e-10)


def test_small_beam_scores_are_the_true_scores_of_its_outputs():
    vocab, max_len = 5, 4
    model, src = random_model(vocab), _sources(3, vocab, seed=5)
    for early_stopping in (True, False):
        out = beam_search(
            model,
            src,
            beam_size=3,
            max_new_tokens=max_len,
            early_stopping=early_stopping,
            num_return_sequences=3,
            **KW,
        )
        _check_output(out, 3, 3)
        for b in range(3):
            outputs = [_trim(row) for row in out.sequences[b]]
            lengths = torch.tensor([len(o) for o in outputs], dtype=torch.float64)
            torch.testing.assert_close(
                out.scores[b], _log_probs(model, src[b], outputs) / lengths, rtol=0, atol=1e-10
            )
            assert len(set(outputs)) == 3
            best = _true_ranking(model, src[b], vocab, max_len, 1.0)[1][0]
            assert out.scores[b, 0] <= best + 1e-12


def test_exhaustive_stopping_is_never_worse_than_early_stopping():
    model, src = random_model(6, seed=2), _sources(6, 6, seed=3)
    kw = dict(beam_size=2, max_new_tokens=8, num_return_sequences=2, **KW)
    early = beam_search(model, src, early_stopping=True, **kw)
    exhaustive = beam_search(model, src, early_stopping=False, **kw)
    assert torch.all(exhaustive.scores >= early.scores - 1e-12)


# ---------------------------------------------------------------------- greedy, cache, batch


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_size_one_is_greedy(length_penalty):
    model, src = random_model(8), _sources(8, 8)
    greedy = greedy_decode(model, src, max_new_tokens=10, **KW)
    out = beam_search(
        model, src, beam_size=1, max_new_tokens=10, length_penalty=length_penalty, **KW
    )
    _check_output(out, 8, 1)
    width = max(greedy.size(1), out.sequences.size(2))

    def pad(x: Tensor) -> Tensor:
        return nn.functional.pad(x, (0, width - x.size(-1)), value=PAD)

    assert torch.equal(pad(out.sequences[:, 0]), pad(greedy))
    assert len({len(_trim(row)) for row in greedy}) >= 3  # rows end at different lengths
    for b in range(8):
        tokens = _trim(greedy[b])
        expected = _log_probs(model, src[b], [tokens]) / len(tokens) ** length_penalty
        torch.testing.assert_close(out.scores[b], expected, rtol=0, atol=1e-10)


def test_cached_equals_uncached_beam_search():
    model, src = random_model(8), _sources(5, 8)
    kw = dict(beam_size=4, max_new_tokens=9, num_return_sequences=4, early_stopping=False, **KW)
    cached = beam_search(model, src, **kw)
    for reference in (FullForward(model, src), EncoderDecoderAdapter(model, src, use_cache=False)):
        uncached = beam_search(reference, None, **kw)
        assert torch.equal(cached.sequences, uncached.sequences)
        assert torch.equal(cached.lengths, uncached.lengths)
        torch.testing.assert_close(cached.scores, uncached.scores, rtol=0, atol=1e-10)


def test_batch_rows_decode_as_alone_despite_padding():
    model, src = random_model(8), _sources(6, 8, seed=4)
    lengths = (src != PAD).sum(1)
    assert lengths.unique().numel() > 2
    kw = dict(beam_size=3, max_new_tokens=8, num_return_sequences=2, **KW)
    batched = beam_search(model, src, **kw)
    for b in range(6):
        alone = beam_search(model, src[b : b + 1, : int(lengths[b])], **kw)
        assert torch.equal(alone.lengths[0], batched.lengths[b])
        width = alone.sequences.size(2)
        assert torch.equal(alone.sequences[0], batched.sequences[b, :, :width])
        torch.testing.assert_close(alone.scores[0], batched.scores[b], rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- semantics


# Tokens: pad 0, bos 1, eos 2, a 3, b 4. After bos: eos .5, a .4, b .1; after "a": eos .99.
SCRIPT = Scripted(
    {(): [0, 0, 0.5, 0.4, 0.1], (3,): [0, 0, 0.99, 0.005, 0.005]}, [0, 0, 0.9, 0.05, 0.05]
)


def test_early_stopping_true_stops_at_beam_size_finished_hypotheses():
    out = beam_search(SCRIPT, None, beam_size=1, max_new_tokens=3, early_stopping=True, **KW)
    assert out.sequences.tolist() == [[[EOS]]]
    torch.testing.assert_close(out.scores, torch.tensor([[math.log(0.5)]], dtype=torch.float64))


def test_early_stopping_false_keeps_going_while_a_live_beam_can_win():
    out = beam_search(SCRIPT, None, beam_size=1, max_new_tokens=3, early_stopping=False, **KW)
    assert out.sequences.tolist() == [[[3, EOS]]]
    expected = (math.log(0.4) + math.log(0.99)) / 2  # beats log(.5) / 1 = -0.69
    torch.testing.assert_close(out.scores, torch.tensor([[expected]], dtype=torch.float64))
    assert out.lengths.tolist() == [[2]]
    # Without length normalisation the short hypothesis wins and the bound stops at once.
    out = beam_search(
        SCRIPT, None, beam_size=1, max_new_tokens=3, early_stopping=False, length_penalty=0.0, **KW
    )
    assert out.sequences.tolist() == [[[EOS]]]


def test_n_best_with_length_penalty_and_unfinished_hypotheses():
    out = beam_search(
        SCRIPT,
        None,
        beam_size=3,
        max_new_tokens=2,
        early_stopping=False,
        num_return_sequences=3,
        **KW,
    )
    log = math.log
    expected = {  # every output of length <= 2, mean log-probability
        (EOS,): log(0.5),
        (3, EOS): (log(0.4) + log(0.99)) / 2,
        (4, EOS): (log(0.1) + log(0.9)) / 2,
        (3, 3): (log(0.4) + log(0.005)) / 2,
        (3, 4): (log(0.4) + log(0.005)) / 2,
        (4, 3): (log(0.1) + log(0.05)) / 2,
        (4, 4): (log(0.1) + log(0.05)) / 2,
    }
    best = sorted(expected, key=expected.get, reverse=True)[:3]
    assert [_trim(row) for row in out.sequences[0]] == best
    torch.testing.assert_close(
        out.scores[0], torch.tensor([expected[o] for o in best], dtype=torch.float64)
    )


def test_fewer_possible_outputs_than_requested_are_minus_inf():
    only_eos = Scripted({}, [0, 0, 1.0, 0, 0])
    out = beam_search(only_eos, None, beam_size=3, max_new_tokens=4, num_return_sequences=3, **KW)
    assert out.sequences.tolist() == [[[EOS], [PAD], [PAD]]]
    assert out.lengths.tolist() == [[1, 0, 0]]
    assert out.scores[0, 0] == 0 and torch.all(torch.isneginf(out.scores[0, 1:]))


def test_max_new_tokens_cuts_hypotheses_without_eos():
    never_eos = Scripted({}, [0, 0, 0, 0.7, 0.3])
    out = beam_search(never_eos, None, beam_size=2, max_new_tokens=3, num_return_sequences=2, **KW)
    assert out.sequences.tolist() == [[[3, 3, 3], [3, 3, 4]]]
    assert out.lengths.tolist() == [[3, 3]]
    torch.testing.assert_close(
        out.scores[0],
        torch.tensor([3 * math.log(0.7), 2 * math.log(0.7) + math.log(0.3)]).double() / 3,
    )


def test_beam_search_errors():
    model, src = random_model(5), _sources(2, 5)
    cases = [
        ({"beam_size": 0}, "beam_size must be >= 1; got 0"),
        ({"beam_size": 2.0}, "beam_size must be an integer; got 2.0"),
        ({"num_return_sequences": 3}, "num_return_sequences must be <= beam_size = 2"),
        ({"num_return_sequences": 0}, "num_return_sequences must be >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"length_penalty": math.nan}, "length_penalty must be a finite number"),
        ({"early_stopping": "never"}, "early_stopping must be True or False"),
        ({"eos_id": 5}, r"eos_id must be in \[0, 5\)"),
    ]
    for kwargs, message in cases:
        kwargs = {**KW, "beam_size": 2, "max_new_tokens": 3, **kwargs}
        with pytest.raises(ValueError, match=message):
            beam_search(model, src, **kwargs)


def test_beam_search_needs_exactly_one_integer_eos_id():
    model, src = random_model(5), _sources(2, 5)
    kw = dict(beam_size=2, max_new_tokens=3, bos_id=BOS, pad_id=PAD)
    for eos in ([EOS, 3], None, 2.0):
        message = rf"eos_id must be one integer token id for beam search; got {eos!r}"
        with pytest.raises(TypeError, match=re.escape(message)):
            beam_search(model, src, eos_id=eos, **kw)
    with pytest.raises(TypeError, match=r"eos_id must be one integer token id for beam search"):
        generate(model, src, "beam", eos_id=None, **kw)
    expected = beam_search(model, src, eos_id=EOS, **kw)
    for eos in (np.int64(EOS), torch.tensor(EOS)):
        assert torch.equal(beam_search(model, src, eos_id=eos, **kw).sequences, expected.sequences)
