"""Head importance, ablation and pruning (Michel, Levy & Neubig 2019).

Every attnkit attention module takes a ``head_mask`` ``(H,)`` or ``(B, H)``
that scales each head's output. :func:`head_masks` feeds masks to the modules
of any model through hooks, so models need no extra arguments:

* importance: ``I_h = E |dL / d xi_h|`` at ``xi = 1`` (the gradient of the loss
  with respect to head ``h``'s mask), averaged over batches;
* ablation: the change of a metric when one head's mask is 0;
* pruning: heads removed with their parameters (the outputs equal masking).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.analysis.capture import attention_modules

__all__ = ["HeadScores", "head_ablation", "head_importance", "head_masks", "prune_heads"]


@dataclass
class HeadScores:
    """One score per head of each attention module.

    Attributes:
        names: module paths, in model order.
        scores: per module ``(H,)`` (modules may differ in head count after pruning).

    Example:
        >>> import torch
        >>> from attnkit.analysis import HeadScores
        >>> scores = HeadScores(["l0", "l1"], [torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
        >>> scores.as_matrix().tolist()  # l1 lost a head to pruning: NaN
        [[1.0, 2.0], [3.0, nan]]
    """

    names: list[str]
    scores: list[Tensor]

    def as_matrix(self) -> Tensor:
        """``(modules, max H)``; missing heads are NaN."""
        width = max(score.numel() for score in self.scores)
        matrix = torch.full((len(self.scores), width), float("nan"), dtype=torch.float64)
        for row, score in enumerate(self.scores):
            matrix[row, : score.numel()] = score.double().cpu()
        return matrix

    def ranked(self) -> list[tuple[str, int, float]]:
        """``(module, head, score)`` from the most to the least important."""
        entries = [
            (name, head, float(value))
            for name, score in zip(self.names, self.scores, strict=True)
            for head, value in enumerate(score.tolist())
        ]
        return sorted(entries, key=lambda entry: entry[2], reverse=True)


@contextmanager
def head_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> Iterator[None]:
    """Pass ``masks[name]`` (``(H,)`` or ``(B, H)``) as the head mask of each named module.

    A mask the caller passes as well is multiplied in. Unknown names raise.

    Example:
        >>> import torch
        >>> from attnkit.analysis import head_masks
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> ids = torch.randint(0, 50, (1, 8))
        >>> before = gpt.eval()(ids).logits
        >>> with head_masks(gpt, {"layers.0.self_attn": torch.tensor([1.0, 0.0, 1.0, 1.0])}):
        ...     masked = gpt(ids).logits  # head 1 of layer 0 silenced
        >>> torch.allclose(masked, before), torch.allclose(gpt(ids).logits, before)  # hooks gone
        (False, True)
    """
    modules = dict(attention_modules(model))
    unknown = sorted(set(masks) - set(modules))
    if unknown:
        raise ValueError(f"no attention modules named {unknown}; the model has {sorted(modules)}")
    handles = [
        modules[name].register_forward_pre_hook(_inject(mask), with_kwargs=True)
        for name, mask in masks.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _inject(mask: Tensor):
    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        given = kwargs.get("head_mask")
        return args, {**kwargs, "head_mask": mask if given is None else given * mask}

    return hook


@contextmanager
def _evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout: scores are deterministic), restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def head_importance(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    normalize: bool = True,
) -> HeadScores:
    """Gradient-based head importance (Michel et al. 2019).

    Args:
        batches: inputs to average over (each handed to ``loss_fn``).
        loss_fn: ``(model, batch) -> scalar loss``.
        normalize: divide each module's scores by their L2 norm, as the paper does.

    Returns:
        :class:`HeadScores` with ``mean over batches |dL / d mask_h|``.

    Example:
        >>> import torch
        >>> from attnkit.analysis import head_importance
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> batches = [torch.randint(0, 50, (2, 12)) for _ in range(2)]
        >>> scores = head_importance(gpt, batches, lambda model, ids: model(ids, labels=ids).loss)
        >>> scores.names, [tuple(s.shape) for s in scores.scores]
        (['layers.0.self_attn', 'layers.1.self_attn'], [(4,), (4,)])
    """
    modules = attention_modules(model)
    masks = {
        name: torch.ones(m.num_heads, device=m.q_proj.weight.device, requires_grad=True)
        for name, m in modules
    }
    totals = {name: torch.zeros(m.num_heads, dtype=torch.float64) for name, m in modules}
    count = 0
    with _evaluation(model), head_masks(model, masks):
        for batch in batches:
            gradients = torch.autograd.grad(loss_fn(model, batch), list(masks.values()))
            for name, gradient in zip(masks, gradients, strict=True):
                totals[name] += gradient.detach().abs().double().cpu()
            count += 1
    if count == 0:
        raise ValueError("head_importance needs at least one batch; got none")
    scores = [totals[name] / count for name in masks]
    if normalize:
        scores = [score / score.norm().clamp_min(1e-20) for score in scores]
    return HeadScores(list(masks), scores)


@torch.no_grad()
def head_ablation(
    model: nn.Module,
    batches: Iterable[Any],
    metric_fn: Callable[[nn.Module, Any], float | Tensor],
) -> HeadScores:
    """Change of a metric when each head alone is masked: ``metric(masked) - metric(all)``.

    With a loss as the metric, large positive values mark heads the model needs.
    Runs ``1 + total heads`` passes over ``batches`` (materialised once).

    Example:
        >>> import torch
        >>> from attnkit.analysis import head_ablation
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> batches = [torch.randint(0, 50, (2, 12)) for _ in range(2)]
        >>> scores = head_ablation(gpt, batches, lambda model, ids: model(ids, labels=ids).loss)
        >>> scores.names, tuple(scores.as_matrix().shape)  # loss change per (layer, head)
        (['layers.0.self_attn', 'layers.1.self_attn'], (2, 4))
        >>> len(scores.ranked())  # (module, head, change), the most needed head first
        8
    """
    batches = list(batches)
    if not batches:
        raise ValueError("head_ablation needs at least one batch; got none")

    def evaluate() -> float:
        return sum(float(metric_fn(model, batch)) for batch in batches) / len(batches)

    names, scores = [], []
    with _evaluation(model):
        baseline = evaluate()
        for name, module in attention_modules(model):
            changes = torch.zeros(module.num_heads, dtype=torch.float64)
            for head in range(module.num_heads):
                mask = torch.ones(module.num_heads, device=module.q_proj.weight.device)
                mask[head] = 0.0
                with head_masks(model, {name: mask}):
                    changes[head] = evaluate() - baseline
            names.append(name)
            scores.append(changes)
    return HeadScores(names, scores)


def prune_heads(model: nn.Module, heads: Mapping[str, Iterable[int]]) -> None:
    """Remove the given heads (by module path) with their parameters, in place.

    ``prune_heads(model, {"encoder.layers.0.self_attn": [1, 3]})``; head numbers
    are those of the module as it is now.

    Example:
        >>> import torch
        >>> from attnkit.analysis import head_masks, prune_heads
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> ids = torch.randint(0, 50, (1, 8))
        >>> with head_masks(gpt.eval(), {"layers.0.self_attn": torch.tensor([1.0, 0, 1, 0])}):
        ...     masked = gpt(ids).logits
        >>> prune_heads(gpt, {"layers.0.self_attn": [1, 3]})
        >>> gpt.layers[0].self_attn.num_heads, torch.allclose(gpt(ids).logits, masked, atol=1e-6)
        (2, True)
    """
    modules = dict(attention_modules(model))
    unknown = sorted(set(heads) - set(modules))
    if unknown:
        raise ValueError(f"no attention modules named {unknown}; the model has {sorted(modules)}")
    for name, chosen in heads.items():
        modules[name].prune_heads(chosen)
