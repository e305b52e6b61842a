"""Test support for the training layer: a deterministic resumable batch source, a tiny
Transformer, and (run as a script under torchrun) the DDP worker of
``test_train_distributed.py``.

As a script: ``python -m torch.distributed.run --nproc_per_node 2 --standalone
tests/distributed_worker.py OUT_DIR [ddp|fsdp] [cpu|cuda]`` trains on this rank's
share of every global batch, once straight and once stopped after 3 steps and
resumed; rank 0 writes both loss trajectories to ``OUT_DIR/losses.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnkit.models import Transformer

PAD, BOS, EOS = 0, 1, 2
VOCAB = 12


@dataclass
class CopyBatch:
    """``src (B, S)``, ``tgt_in`` and ``tgt_out`` ``(B, S + 1)``: the target copies the source."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    @property
    def num_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())

    def to(self, device: torch.device) -> CopyBatch:
        return CopyBatch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device))


def copy_batch(rows: int, max_len: int, generator: torch.Generator, min_len: int = 2) -> CopyBatch:
    """Random copy-task rows with lengths in ``[min_len, max_len]`` (padded)."""
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=generator)
    tokens = torch.randint(3, VOCAB, (rows, max_len), generator=generator)
    real = torch.arange(max_len)[None, :] < lengths[:, None]
    src = tokens.masked_fill(~real, PAD)
    tgt_out = torch.cat([src, torch.full((rows, 1), PAD)], dim=1)
    tgt_out[torch.arange(rows), lengths] = EOS
    tgt_in = torch.cat([torch.full((rows, 1), BOS), src], dim=1)
    return CopyBatch(src, tgt_in, tgt_out)


class CopySource:
    """A resumable batch source of the contract the Trainer expects.

    Batch ``i`` of epoch ``e`` is a fixed function of ``(seed, e, i)``: ``rows``
    copy-task rows of which rank ``r`` of ``world_size`` gets the ``r``-th slice,
    so ranks together see exactly the single-process batch. ``iter`` resumes
    from the saved position; exhausting an epoch moves to the next one — when
    the iterator ends, or with ``eager`` as soon as the last batch is handed out
    (as ``attnkit.data``'s batchers do).
    """

    def __init__(
        self,
        num_batches: int = 8,
        rows: int = 8,
        max_len: int = 6,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        eager: bool = False,
    ) -> None:
        self.num_batches, self.rows, self.max_len, self.seed = num_batches, rows, max_len, seed
        self.rank, self.world_size = rank, world_size
        self.eager = eager
        self.epoch = 0
        self.position = 0

    def batch(self, epoch: int, index: int) -> CopyBatch:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + index)
        full = copy_batch(self.rows, self.max_len, generator)
        share = self.rows // self.world_size
        part = slice(self.rank * share, (self.rank + 1) * share)
        return CopyBatch(full.src[part], full.tgt_in[part], full.tgt_out[part])

    def __iter__(self) -> Iterator[CopyBatch]:
        epoch = self.epoch
        while self.position < self.num_batches:
            index = self.position
            self.position += 1
            if self.eager and self.position == self.num_batches:
                self.epoch, self.position = epoch + 1, 0
                yield self.batch(epoch, index)
                return
            yield self.batch(epoch, index)
        self.epoch, self.position = epoch + 1, 0

    def __len__(self) -> int:
        return self.num_batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def tiny_transformer(seed: int = 0, dropout: float = 0.0, d_model: int = 16) -> Transformer:
    """A one-layer Transformer over the copy vocabulary (output tied to the target embedding)."""
    torch.manual_seed(seed)
    return Transformer(
        VOCAB,
        VOCAB,
        d_model=d_model,
        num_heads=2,
        num_layers=1,
        d_ff=2 * d_model,
        dropout=dropout,
        max_len=32,
        pad_id=PAD,
    )


def equivalence_config(output_dir: str | None, **overrides: object) -> object:
    """The TrainConfig shared by the DDP worker and its single-process reference."""
    from attnkit.train import TrainConfig

    settings = dict(
        max_steps=6,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=2,
        accumulation_steps=2,
        grad_clip=1.0,
        log_every=1,
        output_dir=output_dir,
        progress=False,
        plot=False,
        device="cpu",
        seed=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _train(
    out_dir: Path,
    strategy: str,
    context: object,
    device: str,
    stop_at: int | None = None,
    resume: bool = False,
) -> list[float]:
    """Losses of one fit on this rank's share (stopping after ``stop_at`` steps if given)."""
    from attnkit.train import Callback, Trainer, seq2seq_loss

    losses: list[float] = []

    class Record(Callback):
        def on_step_end(self, trainer, metrics):
            losses.append(metrics["loss"])
            if metrics["step"] == stop_at:
                trainer.request_stop("test")

    source = CopySource(rank=context.rank, world_size=context.world_size)
    config = equivalence_config(str(out_dir), distributed=strategy, device=device)
    trainer = Trainer(tiny_transformer(), seq2seq_loss(PAD), source, config, callbacks=[Record()])
    trainer.fit(resume=resume)
    return losses


def main(out_dir: str, strategy: str = "ddp", device: str = "cpu") -> None:
    """One torchrun worker: an uninterrupted run, then a run stopped after 3 steps and
    resumed; rank 0 writes both loss trajectories and the final weights' location."""
    torch.set_num_threads(1)
    from attnkit.train import cleanup_distributed, init_distributed

    context = init_distributed(device, force=True)
    out = Path(out_dir)
    straight = _train(out / "straight", strategy, context, device)
    first = _train(out / "resumed", strategy, context, device, stop_at=3)
    rest = _train(out / "resumed", strategy, context, device, resume=True)
    if context.is_main:
        result = {"losses": straight, "resumed": first + rest, "world_size": context.world_size}
        (out / "losses.json").write_text(json.dumps(result))
    cleanup_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
