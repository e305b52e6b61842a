"""Batching: dynamic padding, token budgets, bucketing, determinism, exact resume, sharding."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.data import (
    ClassificationBatch,
    ClassificationBatcher,
    LMBatch,
    LMWindowSource,
    ReversalTask,
    Seq2SeqBatch,
    SubwordTokenizer,
    TokenBudgetBatcher,
    TokenStream,
    collate_classification,
    collate_seq2seq,
    data_root,
    read_parallel,
)

SPECIALS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}


def make_examples(n: int = 400, seed: int = 0, max_len: int = 40) -> list[tuple[list, list]]:
    """Sentence pairs with skewed lengths (like real text), ids >= 4 (no specials)."""
    rng = np.random.default_rng(seed)
    src_len = np.clip(rng.geometric(1 / 12, n), 1, max_len)
    tgt_len = np.clip(src_len + rng.integers(-3, 4, n), 1, max_len)
    return [
        (rng.integers(4, 50, s).tolist(), rng.integers(4, 50, t).tolist())
        for s, t in zip(src_len, tgt_len, strict=True)
    ]


def as_lists(batch) -> tuple:
    """A batch as nested lists, to compare batches exactly."""
    fields = vars(batch).values()
    return tuple(f.tolist() if isinstance(f, torch.Tensor) else f for f in fields)


def take(source, n: int) -> list[tuple]:
    """The next ``n`` batches, across epoch boundaries, as lists."""
    out = []
    while len(out) < n:
        for batch in source:
            out.append(as_lists(batch))
            if len(out) == n:
                break
    return out


def padded_fraction(batches: list[Seq2SeqBatch]) -> float:
    pad = sum(int((b.src == 0).sum() + (b.tgt_out == 0).sum()) for b in batches)
    total = sum(b.src.numel() + b.tgt_out.numel() for b in batches)
    return pad / total


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> TokenStream:
    path = tmp_path_factory.mktemp("lm") / "tokens.bin"
    return TokenStream.build(np.arange(5000) % 97, path)


def make_source(kind: str, stream: TokenStream, seed: int = 3, **kwargs):
    """One of the three resumable batch sources, small enough for fast tests."""
    if kind == "seq2seq":
        return TokenBudgetBatcher(make_examples(200), 300, seed=seed, **SPECIALS, **kwargs)
    if kind == "classification":
        examples = [(ids, i % 3) for i, (ids, _) in enumerate(make_examples(100))]
        return ClassificationBatcher(examples, 8, pad_id=0, seed=seed, bucket_batches=3, **kwargs)
    return LMWindowSource(stream, 4, 8, seed=seed, steps_per_epoch=7, **kwargs)


SOURCES = ["seq2seq", "classification", "lm"]


# -- batch containers -----------------------------------------------------------------------


def test_collate_seq2seq_adds_bos_eos_and_pads_to_the_longest():
    batch = collate_seq2seq([([5, 6, 7], [8]), ([9], [10, 11, 12])], **SPECIALS, index=[4, 2])
    assert batch.src.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch.tgt_in.tolist() == [[1, 8, 0, 0], [1, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[8, 2, 0, 0], [10, 11, 12, 2]]
    assert batch.index.tolist() == [4, 2]
    assert batch.num_tokens == 2 + 4 and len(batch) == 2
    moved = batch.to("cpu")
    assert isinstance(moved, Seq2SeqBatch) and moved.pad_id == 0
    assert as_lists(moved) == as_lists(batch)


def test_collate_classification_masks_by_length():
    batch = collate_classification([([5, 0, 6], 1), ([7], 0)], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 0, 6], [7, 0, 0]]
    # a real token equal to pad_id (0 inside the first text) is still attended
    assert batch.attention_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.labels.tolist() == [1, 0] and batch.num_tokens == 4
    assert isinstance(batch.to("cpu"), ClassificationBatch)


def test_lm_batch_counts_every_token():
    batch = LMBatch(torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5, dtype=torch.long))
    assert batch.num_tokens == 15 and len(batch) == 3
    assert torch.equal(batch.to("cpu").y, batch.y)


def test_reversal_task_batches_are_seq2seq_batches():
    batch = ReversalTask(min_len=3, max_len=5).sample(4, torch.Generator().manual_seed(0))
    assert isinstance(batch, Seq2SeqBatch)
    lengths = (batch.src != 0).sum(1)
    assert batch.num_tokens == int((lengths + 1).sum())  # digits + eos


# -- token budget and bucketing -------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60),
    max_tokens=st.integers(1, 120),
    bucket_size=st.sampled_from([None, 1, 7]),
    seed=st.integers(0, 3),
)
def test_budget_respected_and_every_example_once(lengths, max_tokens, bucket_size, seed):
    examples = [([5] * s, [6] * t) for s, t in lengths]
    batcher = TokenBudgetBatcher(
        examples, max_tokens, seed=seed, bucket_size=bucket_size, **SPECIALS
    )
    seen = []
    for batch in batcher:
        cost = max(batch.src.numel(), batch.tgt_out.numel())
        assert cost <= max_tokens or len(batch) == 1  # only a lone over-long example exceeds
        assert batch.tgt_in.shape == batch.tgt_out.shape
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(len(examples)))
    assert batcher.epoch == 1 and batcher.position == 0


def test_example_longer_than_budget_gets_its_own_batch_or_is_dropped():
    examples = [([4] * 3, [5] * 3)] * 6 + [([4] * 50, [5] * 2)]
    batcher = TokenBudgetBatcher(examples, 20, seed=0, **SPECIALS)
    sizes = {tuple(b.index.tolist()): b.src.shape for b in batcher}
    assert sizes[(6,)] == (1, 50)
    assert all(len(idx) * 4 <= 20 for idx in sizes if idx != (6,))
    limited = TokenBudgetBatcher(examples, 20, seed=0, max_src_len=10, **SPECIALS)
    assert limited.skipped == [6]
    assert sum(len(b) for b in limited) == 6


def test_max_batch_size_caps_sentences():
    batcher = TokenBudgetBatcher(make_examples(100), 10_000, seed=0, max_batch_size=16, **SPECIALS)
    sizes = [len(b) for b in batcher]
    assert max(sizes) == 16 and sum(sizes) == 100


def test_length_bucketing_pads_far_less_than_random_batching():
    examples = make_examples(2000)
    bucketed = list(TokenBudgetBatcher(examples, 1000, seed=0, **SPECIALS))
    random_batches = list(TokenBudgetBatcher(examples, 1000, seed=0, bucket_size=1, **SPECIALS))
    pooled = list(TokenBudgetBatcher(examples, 1000, seed=0, bucket_size=500, **SPECIALS))
    assert padded_fraction(bucketed) < 0.15  # 0.09: src and tgt lengths differ a little
    assert padded_fraction(random_batches) > 0.5  # 0.67
    assert padded_fraction(bucketed) <= padded_fraction(pooled) < padded_fraction(random_batches)
    assert len(bucketed) < len(random_batches)  # less padding -> more sentences per batch


def test_unshuffled_unsorted_batches_keep_corpus_order():
    batcher = TokenBudgetBatcher(
        make_examples(50), 200, seed=0, shuffle=False, bucket_size=1, **SPECIALS
    )
    order = [i for batch in batcher for i in batch.index.tolist()]
    assert order == list(range(50))


def test_batcher_argument_errors():
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        TokenBudgetBatcher(make_examples(5), 0, seed=0, **SPECIALS)
    with pytest.raises(TypeError, match=r"example 1 must be a \(src_ids, tgt_ids\) pair"):
        TokenBudgetBatcher([([4], [5]), ([4],)], 10, seed=0, **SPECIALS)
    with pytest.raises(ValueError, match="no examples left out of 1"):
        TokenBudgetBatcher([([4] * 9, [5])], 10, seed=0, max_src_len=3, **SPECIALS)
    with pytest.raises(ValueError, match="0 <= rank < world_size; got rank=2, world_size=2"):
        TokenBudgetBatcher(make_examples(5), 10, seed=0, rank=2, world_size=2, **SPECIALS)


# -- classification batcher -----------------------------------------------------------------


def test_classification_batches_cover_all_examples_and_truncate():
    examples = [([4 + i % 5] * (1 + i % 9), i % 2) for i in range(50)]
    batcher = ClassificationBatcher(examples, 8, pad_id=0, seed=0, max_len=6)
    batches = list(batcher)
    assert [len(b) for b in batches] == [8] * 6 + [2]
    assert sorted(i for b in batches for i in b.index.tolist()) == list(range(50))
    assert max(b.input_ids.size(1) for b in batches) == 6
    assert batcher.num_truncated == sum(len(ids) > 6 for ids, _ in examples)
    for b in batches:
        assert b.labels.tolist() == [examples[i][1] for i in b.index.tolist()]
    dropped = ClassificationBatcher(examples, 8, pad_id=0, seed=0, drop_last=True)
    assert [len(b) for b in dropped] == [8] * 6


def test_classification_length_buckets_cut_padding_and_keep_every_example():
    lengths = np.random.default_rng(0).integers(1, 40, size=400)
    examples = [([5] * int(n), i % 2) for i, n in enumerate(lengths)]

    def padding(batcher) -> int:
        return sum(int((~b.attention_mask).sum()) for b in batcher)

    plain = ClassificationBatcher(examples, 16, pad_id=0, seed=1)
    bucketed = ClassificationBatcher(examples, 16, pad_id=0, seed=1, bucket_batches=5)
    batches = list(bucketed)
    assert sorted(i for b in batches for i in b.index.tolist()) == list(range(400))
    assert padding(bucketed) < padding(plain) / 3
    again = ClassificationBatcher(examples, 16, pad_id=0, seed=1, bucket_batches=5)
    assert [b.index.tolist() for b in again] == [b.index.tolist() for b in batches]
    other_seed = ClassificationBatcher(examples, 16, pad_id=0, seed=2, bucket_batches=5)
    assert [b.index.tolist() for b in other_seed] != [b.index.tolist() for b in batches]
    with pytest.raises(ValueError, match="bucket_batches must be >= 0; got -1"):
        ClassificationBatcher(examples, 16, pad_id=0, seed=1, bucket_batches=-1)


def test_classification_without_shuffle_keeps_order():
    examples = [([4], i % 2) for i in range(10)]
    batcher = ClassificationBatcher(examples, 4, pad_id=0, seed=0, shuffle=False)
    assert [b.index.tolist() for b in batcher] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# -- LM windows -----------------------------------------------------------------------------


def test_lm_windows_are_shifted_slices_and_ranks_differ(stream):
    source = LMWindowSource(stream, 4, 8, seed=0, steps_per_epoch=3)
    for batch in source:
        assert batch.x.shape == batch.y.shape == (4, 8)
        assert torch.equal(batch.x[:, 1:], batch.y[:, :-1])
        assert torch.equal((batch.x + 1) % 97, batch.y)  # the stream counts up mod 97
    first = [as_lists(b) for b in LMWindowSource(stream, 4, 8, seed=0, steps_per_epoch=3)]
    other_rank = LMWindowSource(stream, 4, 8, seed=0, steps_per_epoch=3, rank=1, world_size=2)
    assert [as_lists(b) for b in other_rank] != first


# -- determinism and the resumable protocol (all three sources) -----------------------------


@pytest.mark.parametrize("kind", SOURCES)
def test_same_seed_same_batches_new_epoch_new_order(kind, stream):
    a, b = make_source(kind, stream), make_source(kind, stream)
    n = len(a)
    run_a, run_b = take(a, 2 * n), take(b, 2 * n)
    assert run_a == run_b
    assert len(set(map(str, run_a[:n]))) == n  # no batch repeats within an epoch
    assert run_a[:n] != run_a[n:]  # epoch 1 is shuffled differently from epoch 0
    assert a.epoch == 2 and a.position == 0


@pytest.mark.parametrize("kind", SOURCES)
def test_different_seed_different_batches(kind, stream):
    assert take(make_source(kind, stream), 3) != take(make_source(kind, stream, seed=4), 3)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("where", ["start", "middle", "last", "end"])
def test_resume_gives_exactly_the_remaining_and_later_batches(kind, where, stream):
    reference = make_source(kind, stream)
    n = len(reference)
    expected = take(reference, 3 * n)
    k = {"start": 0, "middle": n // 2, "last": n - 1, "end": n}[where]

    first = make_source(kind, stream)
    consumed = take(first, k) if k else []
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints hold plain data
    assert (state["epoch"], state["position"]) == ((1, 0) if k == n else (0, k))

    resumed = make_source(kind, stream)
    resumed.load_state_dict(state)
    assert consumed + take(resumed, 3 * n - k) == expected


@pytest.mark.parametrize("kind", SOURCES)
def test_breaking_out_of_a_loop_keeps_the_position(kind, stream):
    source = make_source(kind, stream)
    expected = take(make_source(kind, stream), len(source) + 2)
    got = []
    for batch in source:  # stop after two batches, as a step budget would
        got.append(as_lists(batch))
        if len(got) == 2:
            break
    assert source.position == 2
    got += take(source, len(source))
    assert got == expected


@pytest.mark.parametrize("kind", SOURCES)
def test_loading_a_foreign_state_is_refused(kind, stream):
    source = make_source(kind, stream)
    state = source.state_dict()
    other_kind = next(k for k in SOURCES if k != kind)
    with pytest.raises(ValueError, match=r"cannot resume .* state has kind="):
        make_source(other_kind, stream).load_state_dict(state)
    with pytest.raises(ValueError, match="state has seed=9"):
        source.load_state_dict({**state, "seed": 9})
    with pytest.raises(ValueError, match="state has fingerprint="):
        source.load_state_dict({**state, "fingerprint": "0"})
    with pytest.raises(ValueError, match=f"position 99 is past the {len(source)} batches"):
        source.load_state_dict({**state, "position": 99})


def test_seq2seq_state_is_tied_to_the_data():
    a = TokenBudgetBatcher(make_examples(50, seed=0), 200, seed=0, **SPECIALS)
    b = TokenBudgetBatcher(make_examples(50, seed=1), 200, seed=0, **SPECIALS)
    with pytest.raises(ValueError, match="different data or settings"):
        b.load_state_dict(a.state_dict())


def test_two_live_iterators_are_an_error():
    batcher = TokenBudgetBatcher(make_examples(50), 100, seed=0, **SPECIALS)
    first, second = iter(batcher), iter(batcher)
    next(first)
    with pytest.raises(RuntimeError, match="use one iterator at a time"):
        next(first), next(second), next(first)


# -- distributed shards ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seq2seq", "classification"])
def test_ranks_split_every_global_step_disjointly(kind, stream):
    world = 3
    single = make_source(kind, stream)
    global_batches = [b.index.tolist() for b in single]
    ranks = [make_source(kind, stream, rank=r, world_size=world) for r in range(world)]
    steps = len(global_batches) // world
    assert [len(r) for r in ranks] == [steps] * world
    per_rank = [[b.index.tolist() for b in r] for r in ranks]
    for step in range(steps):
        shares = [per_rank[r][step] for r in range(world)]
        assert shares == global_batches[step * world : (step + 1) * world]
        flat = [i for share in shares for i in share]
        assert len(set(flat)) == len(flat)  # disjoint within the step
    covered = sorted(i for share in per_rank for batch in share for i in batch)
    expected = sorted(i for batch in global_batches[: steps * world] for i in batch)
    assert covered == expected
    assert all(r.epoch == 1 and r.position == 0 for r in ranks)


def test_every_rank_can_resume_from_rank_zeros_state():
    make = lambda rank: TokenBudgetBatcher(  # noqa: E731
        make_examples(200), 300, seed=3, rank=rank, world_size=2, **SPECIALS
    )
    rank0, rank1 = make(0), make(1)
    take(rank0, 3)
    expected = take(make(1), 3 + 5)[3:]
    rank1.load_state_dict(rank0.state_dict())
    assert take(rank1, 5) == expected


def test_too_little_data_for_the_world_size_is_an_error():
    batcher = TokenBudgetBatcher([([4], [5])], 100, seed=0, rank=1, world_size=2, **SPECIALS)
    assert len(batcher) == 0
    with pytest.raises(ValueError, match="no batches for rank 1 of 2 in epoch 0"):
        next(iter(batcher))


def test_multi30k_end_to_end_batches_decode_back_to_the_corpus():
    root = data_root() / "multi30k"
    assert (root / "val.en.gz").is_file(), f"shared data not found: {root} (set ATTNKIT_DATA)"
    corpus = read_parallel(root / "val.en.gz", root / "val.de.gz")
    tok = SubwordTokenizer.train(corpus.sources + corpus.targets, kind="bpe", vocab_size=2000)
    batcher = TokenBudgetBatcher(corpus.encode(tok), 2000, seed=0, **SPECIALS)
    batches = list(batcher)
    assert sum(len(b) for b in batches) == len(corpus) == 1014
    unsorted = TokenBudgetBatcher(corpus.encode(tok), 2000, seed=0, bucket_size=1, **SPECIALS)
    # padding left is mostly source vs target length (0.13 here; 0.52 unsorted)
    assert padded_fraction(batches) < 0.5 * padded_fraction(list(unsorted))
    for batch in batches:
        decoded = tok.decode_batch(batch.tgt_out)
        assert decoded == [tok.normalize(corpus[i][1]) for i in batch.index.tolist()]
