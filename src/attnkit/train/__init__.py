"""Training: the Trainer, its config, optimizer and schedules, losses, checkpoints,
logs and distributed (DDP/FSDP) support.

Typical use::

    from attnkit.train import Trainer, TrainConfig, seq2seq_loss

    config = TrainConfig(max_steps=1000, lr=5e-4, schedule="cosine", warmup_steps=100,
                         eval_every=200, best_metric="loss", output_dir="runs/copy")
    summary = Trainer(model, seq2seq_loss(pad_id=0, smoothing=0.1), batches, config,
                      evaluate_fn=evaluate).fit(resume=True)
"""

from attnkit.train.callbacks import Callback, TimeLimit
from attnkit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    apply_model_state,
    check_model_state,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from attnkit.train.config import TrainConfig
from attnkit.train.distributed import (
    DistributedContext,
    ShardedBatchSource,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    unwrap_model,
    wrap_model,
)
from attnkit.train.logging import MetricsLogger, plot_loss_curve, read_metrics
from attnkit.train.losses import (
    LossFn,
    LossOutput,
    label_smoothed_cross_entropy,
    model_output_loss,
    seq2seq_loss,
)
from attnkit.train.optim import build_optimizer, parameter_groups
from attnkit.train.rng import capture_rng_state, restore_rng_state, seed_everything
from attnkit.train.schedules import (
    build_scheduler,
    constant_factor,
    cosine_factor,
    linear_factor,
    noam_factor,
)
from attnkit.train.state import TrainSummary, move_to_device
from attnkit.train.trainer import EvaluateFn, Trainer

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "DistributedContext",
    "EvaluateFn",
    "LossFn",
    "LossOutput",
    "MetricsLogger",
    "ShardedBatchSource",
    "TimeLimit",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "all_gather_object",
    "all_reduce_sum",
    "apply_model_state",
    "barrier",
    "broadcast_object",
    "build_optimizer",
    "build_scheduler",
    "capture_rng_state",
    "check_model_state",
    "cleanup_distributed",
    "constant_factor",
    "cosine_factor",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "label_smoothed_cross_entropy",
    "linear_factor",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "model_output_loss",
    "move_to_device",
    "noam_factor",
    "parameter_groups",
    "plot_loss_curve",
    "read_checkpoint",
    "read_metrics",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "seq2seq_loss",
    "unwrap_model",
    "verify_checkpoint",
    "wrap_model",
]
