"""Distributed training: the batch-level sampler, and 2-process DDP / FSDP runs under
torchrun (gloo on CPU) whose loss trajectories equal a single process's on the same
global batches; stopping and resuming a distributed run changes nothing."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnkit.train import (
    Callback,
    ShardedBatchSource,
    Trainer,
    read_metrics,
    seq2seq_loss,
    wrap_model,
)
from distributed_worker import PAD, CopySource, equivalence_config, tiny_transformer

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_sharded_source_splits_groups_and_resumes():
    source = CopySource(num_batches=7)
    ranks = [ShardedBatchSource(CopySource(num_batches=7), r, 2) for r in range(2)]
    expected = [source.batch(0, i).src for i in range(6)]  # the 7th (incomplete group) dropped
    for rank, sharded in enumerate(ranks):
        assert len(sharded) == 3
        got = [batch.src for batch in sharded]
        assert all(torch.equal(a, b) for a, b in zip(got, expected[rank::2], strict=True))
    resumable = ShardedBatchSource(CopySource(num_batches=7), 1, 2)
    iterator = iter(resumable)
    next(iterator)
    state = resumable.state_dict()
    assert state == {"epoch": 0, "position": 2}  # the end of the first group
    fresh = ShardedBatchSource(CopySource(num_batches=7), 1, 2)
    fresh.load_state_dict(state)
    assert next(iter(fresh)).src.equal(expected[3])
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedBatchSource(source, 2, 2)


def _single_process_losses() -> list[float]:
    losses: list[float] = []

    class Record(Callback):
        def on_step_end(self, trainer, metrics):
            losses.append(metrics["loss"])

    config = equivalence_config(None)
    Trainer(tiny_transformer(), seq2seq_loss(PAD), CopySource(), config, callbacks=[Record()]).fit()
    return losses


def _launch(tmp_path: Path, strategy: str, device: str = "cpu", nproc: int = 2) -> dict:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--standalone",
        str(WORKER),
        str(tmp_path),
        strategy,
        device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp_path / "losses.json").read_text())


def _check(result: dict, tmp_path: Path, world_size: int, atol: float) -> None:
    reference = _single_process_losses()
    assert result["world_size"] == world_size
    assert len(result["losses"]) == len(reference) == 6
    torch.testing.assert_close(result["losses"], reference, rtol=0, atol=atol)
    assert result["resumed"] == result["losses"]  # stop after 3 steps + resume: identical
    # only rank 0 logs: one train record per step
    steps = [r["step"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl", "train")]
    assert steps == list(range(1, 7))
    # the distributed run's checkpoint resumes in one process (optimizer state keyed by name)
    config = equivalence_config(str(tmp_path / "straight"), max_steps=8)
    trainer = Trainer(tiny_transformer(seed=9), seq2seq_loss(PAD), CopySource(), config)
    summary = trainer.fit(resume=True)
    assert summary.steps == 8 and len(trainer.losses) == 2
    assert all(math.isfinite(loss) for loss in trainer.losses)


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_one_process(tmp_path):
    _check(_launch(tmp_path, "ddp"), tmp_path, 2, atol=1e-5)


@pytest.mark.slow
def test_fsdp_two_cpu_processes_equal_one_process(tmp_path):
    _check(_launch(tmp_path, "fsdp"), tmp_path, 2, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fsdp_on_gpus_with_nccl(tmp_path):
    """FSDP2 over NCCL on the GPUs at hand (one GPU: a process group of one)."""
    nproc = min(2, torch.cuda.device_count())
    result = _launch(tmp_path, "fsdp", "cuda", nproc)
    _check(result, tmp_path, nproc, atol=1e-4)


def test_an_unknown_strategy_is_named_even_without_a_process_group():
    with pytest.raises(ValueError, match="strategy must be 'none', 'ddp' or 'fsdp'; got 'dpp'"):
        wrap_model(torch.nn.Linear(2, 2), "dpp", torch.device("cpu"))
