"""Learning is tested by learning: the Trainer with ``seq2seq_loss`` teaches a tiny
attnkit Transformer to copy digit sequences."""

import pytest
import torch

from attnkit.train import TrainConfig, Trainer, seq2seq_loss
from distributed_worker import BOS, PAD, CopySource, copy_batch, tiny_transformer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


def _greedy(model, src, steps):
    """Plain greedy decoding (full teacher-forced forward per token)."""
    tokens = torch.full((src.size(0), 1), BOS)
    for _ in range(steps):
        next_token = model(src, tokens)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[:, 1:]


def test_trainer_teaches_a_transformer_to_copy(tmp_path):
    held_out = copy_batch(200, 8, torch.Generator().manual_seed(12345))

    def evaluate(model):
        logits = model(held_out.src, held_out.tgt_in)
        real = held_out.tgt_out != PAD
        correct = (logits.argmax(-1) == held_out.tgt_out) & real
        return {"token_accuracy": correct.sum().item() / real.sum().item()}

    config = TrainConfig(
        max_steps=300,
        lr=1e-2,
        schedule="cosine",
        warmup_steps=30,
        eval_every=50,
        best_metric="token_accuracy",
        best_mode="max",
        log_every=25,
        output_dir=tmp_path,
        progress=False,
        device="cpu",
    )
    model = tiny_transformer(d_model=32)
    source = CopySource(num_batches=1000, rows=32, max_len=8, seed=1)
    summary = Trainer(
        model, seq2seq_loss(PAD, smoothing=0.05), source, config, evaluate_fn=evaluate
    ).fit()
    assert summary.last_eval["token_accuracy"] >= 0.98, summary
    model.eval()
    with torch.no_grad():
        predicted = _greedy(model, held_out.src, held_out.tgt_out.size(1))
    real = held_out.tgt_out != PAD
    rows_right = ((predicted == held_out.tgt_out) | ~real).all(dim=1)
    assert rows_right.float().mean() >= 0.9
    assert summary.best_value >= summary.last_eval["token_accuracy"]
    assert (summary.best_checkpoint / "model.safetensors").is_file()
