"""Learning is tested by learning: a small Transformer must solve sequence reversal.

The trained model is shared with the greedy-decoding tests, which need a model
whose sequences end at different lengths.
"""

import pytest
import torch

from attnkit.demo import ReversalDemoConfig, sequence_accuracy, train_reversal
from attnkit.generation import greedy_decode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    config = ReversalDemoConfig(steps=700, eval_size=500, seed=0)
    return train_reversal(config, progress=False)


def test_transformer_learns_to_reverse_digit_sequences(trained):
    _, _, result = trained
    assert result.sequence_accuracy >= 0.99, result
    assert result.example_output == " ".join(reversed(result.example_source.split()))


def _uncached_greedy(model, src, max_new_tokens, task):
    """Reference: rerun the full teacher-forced forward pass for every new token."""
    tokens = torch.full((src.size(0), 1), task.bos_id)
    finished = torch.zeros(src.size(0), dtype=torch.bool)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = model(src, tokens)[:, -1].argmax(-1).masked_fill(finished, task.pad_id)
            out.append(token)
            finished |= token == task.eos_id
            if finished.all():
                break
            tokens = torch.cat([tokens, token[:, None]], dim=1)
    return torch.stack(out, dim=1)


def test_greedy_batch_with_different_lengths_matches_uncached_and_single(trained):
    model, task, _ = trained
    model.eval()
    batch = task.sample(16, torch.Generator().manual_seed(99))
    lengths = (batch.src != task.pad_id).sum(1)
    assert lengths.unique().numel() > 1
    kwargs = dict(max_new_tokens=task.max_len + 1, bos_id=task.bos_id, eos_id=task.eos_id)
    batched = greedy_decode(model, batch.src, **kwargs)
    assert torch.equal(batched, _uncached_greedy(model, batch.src, task.max_len + 1, task))
    for i in range(4):  # a row decodes the same alone, without its padding
        alone = greedy_decode(model, batch.src[i : i + 1, : int(lengths[i])], **kwargs)
        assert torch.equal(alone[0], batched[i, : alone.size(1)])
        assert torch.all(batched[i, alone.size(1) :] == task.pad_id)
    # every row stops with eos and is padded afterwards
    for row, length in zip(batched, lengths, strict=True):
        assert row[int(length)] == task.eos_id
        assert torch.all(row[int(length) + 1 :] == task.pad_id)
    assert sequence_accuracy(batched, batch.tgt_out, task.pad_id) >= 0.9


def test_greedy_stops_early_and_restores_training_mode(trained):
    model, task, _ = trained
    model.train()
    src = task.sample(2, torch.Generator().manual_seed(5)).src
    out = greedy_decode(model, src, max_new_tokens=50, bos_id=task.bos_id, eos_id=task.eos_id)
    assert out.size(1) <= task.max_len + 1  # stopped once all rows produced eos
    assert model.training
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        greedy_decode(model, src, max_new_tokens=0, bos_id=1, eos_id=2)
    with pytest.raises(ValueError, match=r"src must have shape \(B, S\)"):
        greedy_decode(model, src[0], max_new_tokens=3, bos_id=1, eos_id=2)


def test_reversal_evaluation_sequences_were_never_trained_on():
    from attnkit.data import ReversalTask
    from attnkit.demo import _unseen_sequences

    task = ReversalTask(min_len=1, max_len=3)  # few sequences: draws repeat often
    seen = set(map(tuple, task.sample(400, torch.Generator().manual_seed(0)).src.tolist()))
    held_out = _unseen_sequences(task, 50, seen, seed=1)
    assert len(held_out.src) == 50
    assert not any(row in seen for row in map(tuple, held_out.src.tolist()))
    for src, out in zip(held_out.src.tolist(), held_out.tgt_out.tolist(), strict=True):
        digits = [d for d in src if d != task.pad_id]
        assert out[: len(digits) + 1] == [*digits[::-1], task.eos_id]
