"""GPT: shapes, loss, the KV cache, left padding, generation, learning and bad input."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.generation import generate
from attnkit.models import GPT, GPTConfig, build_gpt, causal_lm_loss
from attnkit.nn import KVCacheStack

pytestmark = pytest.mark.usefixtures("single_thread")

LAYOUTS = {
    "gpt2": {},
    "llama": {
        "positional": "rotary",
        "norm": "rmsnorm",
        "activation": "swiglu",
        "num_kv_heads": 2,
        "bias": False,
        "tie_embeddings": False,
    },
    "no_positions": {"positional": "none"},
    "alibi": {"positional": "alibi", "num_heads": 4, "num_kv_heads": 1},
    "t5_bias": {"positional": "t5", "position_options": {"num_buckets": 8, "max_distance": 16}},
    "sinusoidal": {"positional": "sinusoidal"},
    "shaw": {"positional": "relative", "position_options": {"max_relative_position": 4}},
    "local": {
        "positional": "rotary",
        "attention": "sliding_window",
        "attention_options": {"window": 3},
    },
}


def tiny(**overrides) -> GPT:
    base = {
        "vocab_size": 40,
        "max_len": 64,
        "d_model": 32,
        "num_heads": 4,
        "num_layers": 2,
        "dropout": 0.0,
    }
    return build_gpt(GPTConfig(**{**base, **overrides})).eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shapes_and_optional_outputs(layout):
    model = tiny(**LAYOUTS[layout])
    ids = torch.randint(0, 40, (3, 9))
    out = model(ids, output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (3, 9, 40)
    assert out.loss is None
    assert [w.shape for w in out.attentions] == [(3, 4, 9, 9)] * 2
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (3, 9, 32)
    # Causal: no weight above the diagonal.
    assert out.attentions[0].triu(1).abs().max() == 0


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = tiny()
    ids = torch.randint(0, 40, (2, 6))
    labels = ids.clone()
    labels[0, 4:] = -100
    out = model(ids, labels=labels)
    logits = out.logits
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(
        ValueError, match=r"labels must have shape \(B, T\) = \(2, 6\); got \(2, 5\)"
    ):
        causal_lm_loss(logits, labels[:, :5])


def test_tied_output_shares_the_embedding_matrix():
    model = tiny()
    assert model.lm_head.weight.data_ptr() == model.token_embedding.weight.data_ptr()
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.token_embedding.weight.data_ptr()


def test_residual_projections_get_the_scaled_init():
    model = build_gpt(GPTConfig(vocab_size=50, d_model=256, num_heads=4, num_layers=8))
    std = model.layers[0].feed_forward.linear2.weight.std().item()
    assert std == pytest.approx(0.02 / 4, rel=0.1)
    assert model.layers[0].feed_forward.linear1.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cached_decoding_equals_the_full_forward(layout):
    model = tiny(**LAYOUTS[layout])
    ids = torch.randint(0, 40, (2, 10))
    full = model(ids).logits
    cache = model.new_cache(2, 10)
    assert isinstance(cache, KVCacheStack) and cache.length == 0
    pieces = [model(ids[:, :6], cache=cache).logits]
    for t in range(6, 10):
        pieces.append(model(ids[:, t : t + 1], cache=cache).logits)
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_left_padding_does_not_change_the_logits(layout):
    model = tiny(**LAYOUTS[layout])
    prompt = torch.randint(3, 40, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 5])
    alone = model(prompt).logits
    with_padding = model(padded, mask).logits[:, 3:]
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_batched_prompts_of_different_lengths_continue_as_alone(layout, strategy):
    model = tiny(**LAYOUTS[layout])
    long, short = torch.randint(3, 40, (1, 7)), torch.randint(3, 40, (1, 3))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1)])
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :4] = False
    options = {"max_new_tokens": 12}
    if strategy == "sample":
        options.update(top_k=5, temperature=0.8)

    def run(prompts, prompt_mask=None):
        if strategy == "sample":
            options["generator"] = torch.Generator().manual_seed(3)
        return generate(model, prompts, strategy, src_mask=prompt_mask, **options)

    together = run(batch, mask)
    if strategy == "greedy":
        torch.testing.assert_close(together[:1], run(long))
        torch.testing.assert_close(together[1:], run(short))
    assert together.shape == (2, 12)


def test_cached_and_uncached_generation_give_the_same_tokens():
    from attnkit.generation import DecoderOnlyAdapter, greedy_decode

    model = tiny(**LAYOUTS["llama"])
    prompts = torch.randint(3, 40, (2, 4))
    cached = greedy_decode(DecoderOnlyAdapter(model, prompts), None, max_new_tokens=15)
    uncached = greedy_decode(
        DecoderOnlyAdapter(model, prompts, use_cache=False), None, max_new_tokens=15
    )
    torch.testing.assert_close(cached, uncached)


@pytest.mark.parametrize("layout", ["gpt2", "llama", "alibi"])
def test_decoding_with_the_cache_under_autocast(layout):
    """bf16 autocast, as the trainer evaluates: the cache keeps keys/values in bf16."""
    from attnkit.generation import DecoderOnlyAdapter, beam_search, greedy_decode

    torch.manual_seed(0)
    model = tiny(**LAYOUTS[layout])
    prompts = torch.randint(3, 40, (3, 5))
    mask = torch.ones_like(prompts, dtype=torch.bool)
    mask[1, :2] = False
    uncached = DecoderOnlyAdapter(model, prompts, mask, use_cache=False)
    beam = dict(beam_size=3, max_new_tokens=6, eos_id=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = greedy_decode(model, prompts, src_mask=mask, max_new_tokens=10)
        reference = greedy_decode(uncached, None, max_new_tokens=10)
        beams = beam_search(model, prompts, src_mask=mask, **beam)
        beams_reference = beam_search(uncached, None, **beam)
    assert tokens.shape == (3, 10)
    torch.testing.assert_close(tokens, reference)
    torch.testing.assert_close(beams.sequences, beams_reference.sequences)


@pytest.mark.parametrize("layout", ["gpt2", "sinusoidal"])
def test_left_padding_does_not_count_against_max_len(layout):
    model = tiny(max_len=8, **LAYOUTS[layout])
    prompt = torch.randint(3, 40, (1, 2))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), prompt], dim=1)
    # 2 real tokens + 6 new: positions 0..7 of max_len 8, in 4 + 2 + 6 slots.
    alone = generate(model, prompt, "greedy", max_new_tokens=6)
    together = generate(model, padded, "greedy", src_mask=padded != 0, max_new_tokens=6)
    torch.testing.assert_close(together, alone)
    # The forward pass itself: 9 slots, 5 real tokens at positions 0..4.
    ids = torch.cat([padded, torch.randint(3, 40, (1, 3))], dim=1)
    logits = model(ids, ids != 0).logits[:, 4:]
    torch.testing.assert_close(logits, model(ids[:, 4:]).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_a_request_past_max_len_fails_before_any_decoding(strategy):
    model = tiny(max_len=8)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    prompts = torch.randint(3, 40, (2, 6))
    mask = torch.ones_like(prompts, dtype=torch.bool)
    mask[1, :3] = False  # the longest prompt has 6 real tokens
    options = {"beam_size": 2, "eos_id": 2} if strategy == "beam" else {}
    message = (
        r"a prompt of 6 real tokens \+ max_new_tokens=4 would feed positions up to 8, beyond "
        r"the model's max_len=8 \(positions 0..7\); ask for at most 3 new tokens"
    )
    with pytest.raises(ValueError, match=message):
        generate(model, prompts, strategy, src_mask=mask, max_new_tokens=4, **options)
    assert not calls  # failed before the prefill
    # 6 + 3 fits: the new tokens fed back sit at positions 6 and 7; the last is not fed.
    generate(model, prompts, strategy, src_mask=mask, max_new_tokens=3, **options)
    assert calls
    with pytest.raises(ValueError, match="the longest prompt has 9 real tokens, more than the"):
        generate(model, torch.randint(3, 40, (1, 9)), strategy, max_new_tokens=1, **options)
    # A scheme without a position table (rotary) sets no limit.
    rotary = tiny(max_len=8, **LAYOUTS["llama"])
    assert generate(rotary, prompts, "greedy", src_mask=mask, max_new_tokens=6).shape == (2, 6)


def test_stop_tokens_end_rows_and_pad_them():
    model = tiny()
    prompts = torch.randint(3, 40, (3, 4))
    free = generate(model, prompts, "greedy", max_new_tokens=10)
    stop = int(free[0, 2])
    stopped = generate(model, prompts, "greedy", max_new_tokens=10, eos_id=[stop, 39], pad_id=0)
    first = int((free[0] == stop).nonzero()[0])
    assert stopped[0, first] == stop
    assert (stopped[0, first + 1 :] == 0).all()


def test_beam_search_with_one_beam_equals_greedy():
    model = tiny()
    prompts = torch.randint(3, 40, (2, 5))
    greedy = generate(model, prompts, "greedy", max_new_tokens=8, eos_id=2)
    beam = generate(model, prompts, "beam", beam_size=1, max_new_tokens=8, eos_id=2)
    torch.testing.assert_close(beam.sequences[:, 0, : greedy.size(1)], greedy)


def test_learns_to_copy_a_sequence():
    """Inputs ``[x1..x6, SEP, x1..x6]``: the second half is predictable only by attending back."""
    torch.manual_seed(0)
    model = tiny(vocab_size=12, d_model=48, num_layers=2, max_len=16)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sep = 11

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        body = torch.randint(0, 10, (n, 6))
        ids = torch.cat([body, torch.full((n, 1), sep), body], dim=1)
        labels = ids.clone()
        labels[:, :7] = -100  # score only the copied half
        return ids, labels

    for _ in range(400):
        ids, labels = batch(64)
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ids, _ = batch(200)
    continued = generate(model, ids[:, :7], "greedy", max_new_tokens=6)
    accuracy = (continued == ids[:, 7:]).all(dim=1).float().mean().item()
    assert accuracy >= 0.95, accuracy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30}, r"d_model \(30\) must be divisible by num_heads \(4\)"),
        ({"positional": "alibi?"}, "positional must be one of"),
        ({"attention": "sparse"}, r"attention must be one of .*got 'sparse'"),
        (
            {"attention": "sliding_window", "attention_options": {"block_size": 8}},
            r"attention options \['block_size'\] do not apply to 'sliding_window'",
        ),
        ({"num_layers": 0}, "num_layers must be >= 1; got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\); got 1.0"),
    ],
)
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_bad_inputs_are_named():
    model = tiny()
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\); got \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"input_ids must be integer token ids; got torch\.float32"
    ):
        model(torch.zeros(1, 4))
    with pytest.raises(
        ValueError, match=r"attention_mask must have shape .* = \(1, 4\); got \(1, 3\)"
    ):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3))
    with pytest.raises(ValueError, match="sequence of 65 positions exceeds max_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position 65 exceeds max_len=64 \(positions 0..63\)"):
        model(torch.zeros(1, 66, dtype=torch.long), torch.ones(1, 66))


def test_bad_prompts_are_named():
    model = tiny()
    ids = torch.ones(2, 4, dtype=torch.long)
    right_padded = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match="prompts must be left-padded"):
        generate(model, ids, "greedy", src_mask=right_padded, max_new_tokens=2)
    empty_row = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="every prompt needs at least one real token"):
        generate(model, ids, "greedy", src_mask=empty_row, max_new_tokens=2)
    with pytest.raises(ValueError, match="eos_id must be in"):
        generate(model, ids, "greedy", eos_id=99, max_new_tokens=2)
