"""Attention analysis and visualisation: capture, statistics, rollout, head
importance and pruning, pictures (see also :mod:`attnkit.analysis.explorer`)."""

from attnkit.analysis.analyzer import AttentionAnalyzer
from attnkit.analysis.capture import (
    ATTENTION_KINDS,
    AttentionCapture,
    AttentionRecord,
    attention_modules,
    capture_attention,
)
from attnkit.analysis.explorer import write_attention_explorer
from attnkit.analysis.importance import (
    HeadScores,
    head_ablation,
    head_importance,
    head_masks,
    prune_heads,
)
from attnkit.analysis.plots import (
    plot_attention_grid,
    plot_attention_heatmap,
    plot_head_scores,
    plot_rollout,
)
from attnkit.analysis.rollout import attention_flow, attention_rollout, residual_attention
from attnkit.analysis.statistics import (
    attention_entropy,
    mean_attention_distance,
    special_token_attention,
)

__all__ = [
    "ATTENTION_KINDS",
    "AttentionAnalyzer",
    "AttentionCapture",
    "AttentionRecord",
    "HeadScores",
    "attention_entropy",
    "attention_flow",
    "attention_modules",
    "attention_rollout",
    "capture_attention",
    "head_ablation",
    "head_importance",
    "head_masks",
    "mean_attention_distance",
    "plot_attention_grid",
    "plot_attention_heatmap",
    "plot_head_scores",
    "plot_rollout",
    "prune_heads",
    "residual_attention",
    "special_token_attention",
    "write_attention_explorer",
]
