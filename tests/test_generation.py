"""Greedy decoding, sampling and logit processors over the step interface.

References: an uncached decoder that reruns the model's full forward pass for
every token (no KV cache, no adaptor), hand-computed processor outputs, and
the softmax a sampler must draw from.
"""

import math
import re

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnkit.generation import (
    DecodingModel,
    EncoderDecoderAdapter,
    apply_repetition_penalty,
    apply_suppression,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    beam_search,
    generate,
    greedy_decode,
    sample,
    suppressed_ids,
)
from generation_helpers import BOS, EOS, PAD, BiasedTransformer, FullForward, random_model

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 8


class Scripted:
    """DecodingModel whose logits are ``fn(tokens so far (N, t))``, bos included."""

    def __init__(self, fn, batch_size: int = 1) -> None:
        self.fn, self._batch_size = fn, batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def start(self, num_beams, max_new_tokens, *, bos_id):
        state = {"tokens": torch.full((self._batch_size * num_beams, 1), bos_id)}
        return state, self.fn(state["tokens"])

    def step(self, state, tokens):
        state["tokens"] = torch.cat([state["tokens"], tokens], dim=1)
        return self.fn(state["tokens"])

    def reorder(self, state, indices):
        state["tokens"] = state["tokens"][indices]


@pytest.fixture(scope="module")
def model() -> BiasedTransformer:
    return random_model()


@pytest.fixture(scope="module")
def src() -> Tensor:
    """Eight sources of different lengths (padded with PAD)."""
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(3, VOCAB, (8, 7), generator=gen)
    lengths = torch.tensor([7, 3, 5, 2, 6, 4, 7, 1])
    return src.masked_fill(torch.arange(7) >= lengths[:, None], PAD)


KW = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)


def _pad_to(x: Tensor, width: int) -> Tensor:
    return nn.functional.pad(x, (0, width - x.size(-1)), value=PAD)


# ---------------------------------------------------------------------- interface


def test_adaptors_are_decoding_models(model, src):
    assert isinstance(EncoderDecoderAdapter(model, src), DecodingModel)
    assert isinstance(FullForward(model, src), DecodingModel)
    assert not isinstance(model, DecodingModel)


def test_adapter_uncached_equals_cached_logits_after_reorder(model, src):
    cached, uncached = (
        EncoderDecoderAdapter(model, src),
        EncoderDecoderAdapter(model, src, use_cache=False),
    )
    with torch.no_grad():
        s1, l1 = cached.start(3, 6, bos_id=BOS)
        s2, l2 = uncached.start(3, 6, bos_id=BOS)
        torch.testing.assert_close(l1, l2, rtol=0, atol=1e-10)
        gen = torch.Generator().manual_seed(0)
        for _ in range(4):
            order = torch.randperm(l1.size(0), generator=gen)
            tokens = torch.randint(0, VOCAB, (l1.size(0), 1), generator=gen)
            cached.reorder(s1, order)
            uncached.reorder(s2, order)
            l1, l2 = cached.step(s1, tokens), uncached.step(s2, tokens)
            torch.testing.assert_close(l1, l2, rtol=0, atol=1e-10)
    assert s1.cache.length == s2.tokens.size(1) == 5


# ---------------------------------------------------------------------- greedy


def test_greedy_matches_uncached_full_forward_and_pads_after_eos(model, src):
    out = greedy_decode(model, src, max_new_tokens=12, **KW)
    ref = greedy_decode(FullForward(model, src), None, max_new_tokens=12, **KW)
    assert torch.equal(out, ref)
    uncached = greedy_decode(
        EncoderDecoderAdapter(model, src, use_cache=False), None, max_new_tokens=12, **KW
    )
    assert torch.equal(out, uncached)
    ends = [(row == EOS).nonzero()[0, 0].item() if (row == EOS).any() else None for row in out]
    assert len({e for e in ends if e is not None}) >= 3, ends  # rows end at different steps
    for row, end in zip(out, ends, strict=True):
        if end is not None:
            assert torch.all(row[end + 1 :] == PAD)
    if all(e is not None for e in ends):  # stopped as soon as all rows finished
        assert out.size(1) == max(ends) + 1


def test_greedy_row_alone_equals_batched_with_padding(model, src):
    batched = greedy_decode(model, src, max_new_tokens=10, **KW)
    for i, length in enumerate((src != PAD).sum(1).tolist()):
        alone = greedy_decode(model, src[i : i + 1, :length], max_new_tokens=10, **KW)
        assert torch.equal(_pad_to(alone, batched.size(1))[0], batched[i])


def test_greedy_float32_matches_float64_tokens(src):
    out32 = greedy_decode(random_model(dtype=torch.float32), src, max_new_tokens=8, **KW)
    out64 = greedy_decode(random_model(dtype=torch.float64), src, max_new_tokens=8, **KW)
    assert torch.equal(out32, out64)


def test_greedy_restores_training_mode_and_runs_without_grad(src):
    model = random_model().train()
    out = greedy_decode(model, src, max_new_tokens=4, **KW)
    assert model.training and not out.requires_grad
    adapter = EncoderDecoderAdapter(model, src)
    sample(adapter, None, max_new_tokens=3, **KW)
    assert model.training


def test_greedy_errors(model, src):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1; got 0"):
        greedy_decode(model, src, max_new_tokens=0, **KW)
    with pytest.raises(ValueError, match=r"src must have shape \(B, S\)"):
        greedy_decode(model, src[0], max_new_tokens=3, **KW)
    with pytest.raises(ValueError, match=r"eos_id must be in \[0, 8\)"):
        greedy_decode(model, src, max_new_tokens=3, bos_id=BOS, eos_id=8)
    with pytest.raises(ValueError, match="holds its inputs; pass src=None"):
        greedy_decode(FullForward(model, src), src, max_new_tokens=3, **KW)
    with pytest.raises(ValueError, match=r"src \(B, S\) is required"):
        greedy_decode(model, None, max_new_tokens=3, **KW)
    with pytest.raises(TypeError, match="must be a DecodingModel"):
        greedy_decode(nn.Linear(2, 2), src, max_new_tokens=3, **KW)


def test_integer_like_eos_ids_are_ids(model, src):
    expected = greedy_decode(model, src, max_new_tokens=6, **KW)
    for eos in (np.int64(EOS), torch.tensor(EOS), [torch.tensor(EOS)], (np.int32(EOS),)):
        out = greedy_decode(model, src, max_new_tokens=6, bos_id=BOS, eos_id=eos, pad_id=PAD)
        assert torch.equal(out, expected), eos
    sampled = sample(model, src, max_new_tokens=6, top_k=1, **{**KW, "eos_id": np.int64(EOS)})
    assert torch.equal(sampled, expected)


def test_bad_eos_and_pad_ids_are_named_before_the_model_runs():
    calls = []

    def logits(tokens: Tensor) -> Tensor:
        calls.append(tokens.size(1))
        return torch.zeros(tokens.size(0), VOCAB)

    decoder = Scripted(logits)
    expected = r"eos_id must be None, an integer token id or a sequence of them; got "
    for eos in (2.0, "2", [2, 2.5], torch.tensor(2.0), True):
        with pytest.raises(TypeError, match=expected + re.escape(repr(eos))):
            greedy_decode(decoder, None, max_new_tokens=3, bos_id=BOS, eos_id=eos)
    with pytest.raises(TypeError, match=r"pad_id must be an integer token id; got 0.5 \(float\)"):
        sample(decoder, None, max_new_tokens=3, bos_id=BOS, pad_id=0.5)
    assert not calls


def test_cached_decoding_under_autocast(src):
    """bf16 autocast (the trainer's evaluation): the decoder's cache keeps bf16 keys."""
    model = random_model(dtype=torch.float32)
    uncached = EncoderDecoderAdapter(model, src, use_cache=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = greedy_decode(model, src, max_new_tokens=8, **KW)
        reference = greedy_decode(uncached, None, max_new_tokens=8, **KW)
        beams = beam_search(model, src, beam_size=3, max_new_tokens=8, **KW)
        beams_reference = beam_search(uncached, None, beam_size=3, max_new_tokens=8, **KW)
    assert tokens.size(0) == 8 and torch.equal(tokens, reference)
    assert torch.equal(beams.sequences, beams_reference.sequences)


def test_encoder_decoder_takes_a_2d_key_padding_mask(model, src):
    square = src[:7]  # B == S = 7: a (B, S) mask must not be read as (Tq, Tk)
    real = square != PAD
    expected = greedy_decode(model, square, max_new_tokens=6, **KW)
    for mask in (real, real[:, None, None, :]):
        out = greedy_decode(model, square, max_new_tokens=6, src_mask=mask, **KW)
        assert torch.equal(out, expected)
    beams = beam_search(model, square, beam_size=2, max_new_tokens=6, src_mask=real, **KW)
    assert torch.equal(
        beams.sequences, beam_search(model, square, beam_size=2, max_new_tokens=6, **KW).sequences
    )
    message = r"src_mask must be (\(B, S\) = \(7, 7\)|a key-padding mask \(B, S\)).*; got "
    bad = {
        "torch.bool (7, 6)": real[:, :6],
        "torch.float32 (7, 7)": real.float(),
        "torch.bool (7, 1, 7)": real[:, None],
        "torch.bool (7, 1, 7, 7)": real[:, None, None].expand(7, 1, 7, 7),
    }
    for got, mask in bad.items():
        with pytest.raises(ValueError, match=message + re.escape(got)):
            EncoderDecoderAdapter(model, square, mask)


# ---------------------------------------------------------------------- processors


def test_apply_temperature_divides_and_validates():
    logits = torch.tensor([[1.0, -2.0, 4.0]])
    torch.testing.assert_close(apply_temperature(logits, 0.5), torch.tensor([[2.0, -4.0, 8.0]]))
    torch.testing.assert_close(apply_temperature(logits, 2.0), logits / 2)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            apply_temperature(logits, bad)


def test_apply_top_k_keeps_k_best_and_ties():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 5.0, 1.0, 5.0]])
    inf = -math.inf
    expected = torch.tensor([[inf, 3.0, 2.0, inf], [5.0, 5.0, inf, 5.0]])  # ties at k-th kept
    assert torch.equal(apply_top_k(logits, 2), expected)
    assert torch.equal(apply_top_k(logits, 1)[0], torch.tensor([inf, 3.0, inf, inf]))
    assert torch.equal(apply_top_k(logits, 10), logits)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
            apply_top_k(logits, bad)


def test_apply_top_p_known_values():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()

    def kept(p: float) -> list[bool]:
        return torch.isfinite(apply_top_p(logits, p))[0].tolist()

    assert kept(0.45) == [False, True, False, False]
    assert kept(0.75) == [False, True, True, False]
    assert kept(0.9) == [False, True, True, True]
    assert kept(0.99) == [True, True, True, True]
    assert kept(1e-9) == [False, True, False, False]  # tiny p: the argmax only
    assert kept(1.0) == [True, True, True, True]
    torch.testing.assert_close(apply_top_p(logits, 0.75)[0, 1:3], logits[0, 1:3])
    for bad in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            apply_top_p(logits, bad)


def test_apply_top_p_keeps_smallest_set_reaching_p():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 10, generator=gen, dtype=torch.float64) * 2
    for p in (0.1, 0.5, 0.8, 0.95):
        kept = torch.isfinite(apply_top_p(logits, p))
        probs = logits.softmax(-1)
        for row in range(logits.size(0)):  # brute force per row
            sorted_probs = probs[row].sort(descending=True).values
            size = int((sorted_probs.cumsum(0) < p).sum()) + 1
            assert int(kept[row].sum()) == size
            dropped = torch.cat([probs[row][~kept[row]], probs.new_zeros(1)])
            assert probs[row][kept[row]].min() > dropped.max()


def test_apply_repetition_penalty_like_ctrl():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -4.0, 0.0]])
    tokens = torch.tensor([[0, 1, 1], [2, 2, 3]])  # repeats count once
    out = apply_repetition_penalty(logits, tokens, 2.0)
    expected = torch.tensor([[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, -8.0, 0.0]])
    assert torch.equal(out, expected)
    assert torch.equal(logits[0], torch.tensor([2.0, -1.0, 0.5, 3.0]))  # input untouched
    boosted = apply_repetition_penalty(logits, tokens, 0.5)
    assert boosted[0, 0] == 4.0 and boosted[0, 1] == -0.5
    assert torch.equal(apply_repetition_penalty(logits, tokens[:, :0], 2.0), logits)
    with pytest.raises(ValueError, match="repetition_penalty must be a finite number > 0"):
        apply_repetition_penalty(logits, tokens, 0.0)
    with pytest.raises(ValueError, match=r"tokens must be integer ids of shape \(N, t\)"):
        apply_repetition_penalty(logits, tokens[:1], 2.0)
    with pytest.raises(ValueError, match=r"logits must be floating point with shape \(N, V\)"):
        apply_repetition_penalty(logits[0], tokens, 2.0)


# ---------------------------------------------------------------------- sampling


def _sample(model, src, seed=0, **kw):
    return sample(
        model, src, max_new_tokens=10, generator=torch.Generator().manual_seed(seed), **KW, **kw
    )


def test_sampling_is_reproducible_with_a_seeded_generator(model, src):
    first = _sample(model, src, seed=7, temperature=1.5)
    assert torch.equal(first, _sample(model, src, seed=7, temperature=1.5))
    assert not torch.equal(first, _sample(model, src, seed=8, temperature=1.5))
    assert not torch.equal(first, greedy_decode(model, src, max_new_tokens=10, **KW))


def test_sampling_cached_equals_uncached_full_forward(model, src):
    kw = dict(temperature=1.3, top_k=5, top_p=0.9, repetition_penalty=1.2)
    cached = _sample(model, src, seed=3, **kw)
    assert torch.equal(cached, _sample(FullForward(model, src), None, seed=3, **kw))
    uncached = EncoderDecoderAdapter(model, src, use_cache=False)
    assert torch.equal(cached, _sample(uncached, None, seed=3, **kw))


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}])
def test_sampling_limits_equal_greedy(model, src, kw):
    greedy = greedy_decode(model, src, max_new_tokens=10, **KW)
    for seed in range(3):
        assert torch.equal(_sample(model, src, seed=seed, **kw), greedy)


def _one_step_frequencies(logits: Tensor, rows: int = 20000, **kw) -> Tensor:
    model = Scripted(lambda tokens: logits.expand(tokens.size(0), -1), batch_size=rows)
    out = sample(
        model,
        None,
        max_new_tokens=1,
        bos_id=BOS,
        eos_id=EOS,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    return torch.bincount(out[:, 0], minlength=logits.size(-1)).double() / rows


def test_sampling_draws_from_the_processed_softmax():
    logits = torch.tensor([[0.0, 0.0, 1.0, 2.0, 0.5, -1.0]], dtype=torch.float64)
    for temperature in (1.0, 0.5, 3.0):
        freq = _one_step_frequencies(logits, temperature=temperature)
        expected = (logits[0] / temperature).softmax(-1)
        torch.testing.assert_close(freq, expected, rtol=0, atol=0.015)
    probs = logits[0].softmax(-1)  # [.071, .071, .192, .523, .117, .026]
    for kw, kept in [
        ({"top_k": 2}, [2, 3]),
        ({"top_p": 0.7}, [2, 3]),  # .523 < .7 <= .523 + .192
        ({"top_p": 0.8}, [2, 3, 4]),  # .715 < .8 <= .832
        ({"top_k": 2, "temperature": 0.5}, [2, 3]),
    ]:
        scaled = (logits[0] / kw.get("temperature", 1.0)).softmax(-1)
        expected = torch.zeros_like(probs)
        expected[kept] = scaled[kept] / scaled[kept].sum()
        freq = _one_step_frequencies(logits, **kw)
        torch.testing.assert_close(freq, expected, rtol=0, atol=0.015)
        assert freq[expected == 0].sum() == 0


def test_repetition_penalty_changes_what_is_repeated():
    base = torch.tensor([-5.0, -5.0, -5.0, 2.0, 1.9])  # token 3 barely beats token 4

    def fn(tokens: Tensor) -> Tensor:
        return base.expand(tokens.size(0), -1)

    kw = dict(max_new_tokens=4, bos_id=BOS, eos_id=EOS, top_k=1)
    plain = sample(Scripted(fn), None, **kw)
    assert plain.tolist() == [[3, 3, 3, 3]]
    penalised = sample(Scripted(fn), None, repetition_penalty=1.2, **kw)
    assert penalised.tolist() == [[3, 4, 3, 3]]  # 2/1.2 < 1.9; then 1.67 > 1.9/1.2


def test_sampling_errors(model, src):
    cases = [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ]
    for kwargs, message in cases:
        kwargs = {"max_new_tokens": 3, **kwargs}
        with pytest.raises(ValueError, match=message):
            sample(model, src, **KW, **kwargs)


# ---------------------------------------------------------------------- suppressed tokens


def test_apply_suppression_forbids_ids_and_checks_them():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    ids = suppressed_ids([1, 2], 3, torch.device("cpu"))
    assert apply_suppression(logits, ids).tolist() == [
        [1.0, -math.inf, -math.inf],
        [0.0] + [-math.inf] * 2,
    ]
    assert torch.equal(apply_suppression(logits, suppressed_ids(None, 3, logits.device)), logits)
    with pytest.raises(ValueError, match=r"suppress_ids must be token ids in \[0, 3\); got 3"):
        suppressed_ids([0, 3], 3, torch.device("cpu"))
    with pytest.raises(ValueError, match="would forbid all 3 tokens"):
        suppressed_ids([0, 1, 2], 3, torch.device("cpu"))


def test_suppressed_tokens_are_never_generated(model, src):
    plain = greedy_decode(model, src, max_new_tokens=10, **KW)
    common = plain[plain > EOS].mode().values.item()  # the most frequent ordinary token
    forbidden = [common, EOS]
    kw = dict(max_new_tokens=10, suppress_ids=forbidden, **KW)
    greedy = greedy_decode(model, src, **kw)
    sampled = sample(model, src, generator=torch.Generator().manual_seed(0), **kw)
    beams = beam_search(model, src, beam_size=3, num_return_sequences=3, **kw)
    for out in (greedy, sampled, beams.sequences):
        assert not torch.isin(out, torch.tensor(forbidden)).any()
    assert greedy.size(1) == 10  # eos suppressed: every row runs to max_new_tokens
    assert not torch.equal(greedy, plain[:, : greedy.size(1)])
    one_beam = beam_search(model, src, beam_size=1, **kw).sequences[:, 0]
    assert torch.equal(one_beam, greedy)


# ---------------------------------------------------------------------- generate


def test_generate_dispatches_by_strategy(model, src):
    kw = dict(max_new_tokens=6, **KW)
    assert torch.equal(generate(model, src, **kw), greedy_decode(model, src, **kw))
    beams = generate(model, src, "beam", beam_size=1, **kw)
    assert torch.equal(
        _pad_to(beams.sequences[:, 0], 6), _pad_to(greedy_decode(model, src, **kw), 6)
    )
    sampled = generate(model, src, "sample", generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(
        sampled, sample(model, src, generator=torch.Generator().manual_seed(0), **kw)
    )
    with pytest.raises(ValueError, match=r"strategy must be one of \['beam', 'greedy', 'sample'\]"):
        generate(model, src, "nucleus", **kw)
