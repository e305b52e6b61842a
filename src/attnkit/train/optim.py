"""AdamW (or T5's Adafactor) with parameter groups: no weight decay on norms, biases and
embeddings.

Embeddings are the parameters of embedding modules (``nn.Embedding``, or a class
whose name contains ``Embedding``) and the parameters a module names in its
``embedding_parameter_names()`` method (names relative to that module): learned
tables held as bare ``nn.Parameter`` objects, such as ViT's class token and positions.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from attnkit.train.config import TrainConfig

__all__ = [
    "build_optimizer",
    "declared_embeddings",
    "is_no_decay_module",
    "layer_depths",
    "parameter_groups",
]

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


def is_no_decay_module(module: nn.Module, *, embeddings: bool = True) -> bool:
    """Norm layers and (unless ``embeddings=False``) embedding tables: not decayed."""
    name = type(module).__name__
    if isinstance(module, _NORM_TYPES) or name.endswith("Norm"):
        return True
    is_embedding = isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or "Embedding" in name
    return embeddings and is_embedding


def declared_embeddings(module: nn.Module) -> list[nn.Parameter]:
    """The parameters ``module.embedding_parameter_names()`` names, if it has that method.

    A model holding an embedding table as a bare ``nn.Parameter`` (not inside an
    embedding module) declares it so, and :func:`parameter_groups` treats it as an
    embedding. Raises ``ValueError`` for a name that is not a parameter of ``module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train.optim import declared_embeddings
        >>> class Tokens(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        ...     def embedding_parameter_names(self):
        ...         return ("cls_token",)
        >>> [tuple(p.shape) for p in declared_embeddings(Tokens())]
        [(1, 1, 4)]
    """
    declare = getattr(module, "embedding_parameter_names", None)
    if not callable(declare):
        return []
    names, own = tuple(declare()), dict(module.named_parameters())
    unknown = sorted(set(names) - set(own))
    if unknown:
        raise ValueError(
            f"{type(module).__name__}.embedding_parameter_names() must name its parameters; "
            f"got {unknown}, which are not among {sorted(own)[:8]}"
        )
    return [own[name] for name in names]


def _no_decay_ids(model: nn.Module, embeddings: bool) -> set[int]:
    """Ids of parameters owned by a norm (or embedding) module or declared embeddings
    (:func:`declared_embeddings`), tied copies included."""
    ids: set[int] = set()
    for module in model.modules():
        if is_no_decay_module(module, embeddings=embeddings):
            ids.update(id(p) for p in module.parameters(recurse=False))
        declared = declared_embeddings(module)  # checked even when they are decayed
        if embeddings:
            ids.update(id(p) for p in declared)
    return ids


_LAYER_NAME = re.compile(r"^(.*?)\blayers\.(\d+)\.")


def layer_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each trainable parameter in the model's one ``layers`` stack.

    A parameter named ``...layers.<i>...`` has depth ``i + 1``; the parameters
    registered before the stack (embeddings) depth 0, those after it (final
    norm, pooler, heads) depth ``L + 1`` for ``L`` layers. Returns
    ``(depths by name, L)``. Raises ``ValueError`` for a model without a
    ``layers`` stack or with more than one (an encoder-decoder).

    Example:
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=10, max_len=4, d_model=8, num_heads=2, num_layers=2))
        >>> depths, num_layers = layer_depths(gpt)
        >>> num_layers, depths["token_embedding.weight"], depths["layers.1.self_attn.q_proj.weight"]
        (2, 0, 2)
        >>> depths["final_norm.weight"]
        3
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    matches = {name: _LAYER_NAME.match(name) for name, _ in named}
    stacks = sorted({m.group(1) + "layers" for m in matches.values() if m is not None})
    if len(stacks) != 1:
        found = stacks or "none"
        raise ValueError(
            f"layer_lr_decay needs one stack of parameters named '...layers.<i>...'; found {found}"
        )
    num_layers = 1 + max(int(m.group(2)) for m in matches.values() if m is not None)
    depths, after_stack = {}, False
    for name, _ in named:
        match = matches[name]
        if match is not None:
            depths[name], after_stack = int(match.group(2)) + 1, True
        else:
            depths[name] = num_layers + 1 if after_stack else 0
    return depths, num_layers


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    decay_embeddings: bool = False,
    layer_lr_decay: float = 1.0,
) -> list[dict]:
    """AdamW groups: ``decay`` (weight matrices) and ``no_decay``, split by depth on request.

    ``no_decay`` holds parameters of norm and embedding modules (a weight tied
    to an embedding included), the embeddings a module declares in its
    ``embedding_parameter_names()`` (ViT's class token and position table),
    biases and any other parameter with fewer than two dimensions (gains,
    scales). ``decay_embeddings=True`` decays embedding tables like other
    matrices (as GPT-2 / nanoGPT do). Frozen parameters are
    left out; each shared parameter appears once. Groups carry a ``"name"`` key
    and an ``"lr_scale"``: 1, unless ``layer_lr_decay < 1`` splits each group
    by :func:`layer_depths` with ``lr_scale = layer_lr_decay ** (L + 1 - depth)``
    (names ``decay.3``, ``no_decay.0``, ...).

    Example:
        >>> from torch import nn
        >>> from attnkit.train import parameter_groups
        >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
        >>> for group in parameter_groups(model, weight_decay=0.1):  # Linear.weight is decayed
        ...     print(group["name"], len(group["params"]), group["weight_decay"])
        decay 1 0.1
        no_decay 4 0.0
        >>> groups = parameter_groups(model, 0.1, decay_embeddings=True)
        >>> [len(group["params"]) for group in groups]  # the embedding table moved to decay
        [2, 3]
    """
    no_decay_ids = _no_decay_ids(model, embeddings=not decay_embeddings)
    depths, num_layers = layer_depths(model) if layer_lr_decay != 1.0 else ({}, -1)
    groups: dict[tuple[str, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = not (id(param) in no_decay_ids or name.endswith("bias") or param.ndim < 2)
        kind, depth = "decay" if decayed else "no_decay", depths.get(name, num_layers + 1)
        if (kind, depth) not in groups:
            groups[kind, depth] = {
                "name": f"{kind}.{depth}" if depths else kind,
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr_scale": layer_lr_decay ** (num_layers + 1 - depth),
            }
        groups[kind, depth]["params"].append(param)
    # the head's groups (scale 1) first: the trainer logs the first group's lr
    return sorted(groups.values(), key=lambda group: (-group["lr_scale"], group["name"]))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or ``config.optimizer="adafactor"``) over :func:`parameter_groups`.

    AdamW tries ``fused=True`` (CUDA, and CPU in torch >= 2.4) and falls back to
    the ``foreach`` implementation when the parameters' device or dtype has no
    fused kernel. Adafactor (T5's optimizer) scales each step by the
    parameter's root-mean-square, so tables initialised at very different
    scales (T5's embeddings at 1, its query projections at ~0.004) learn alike.

    Example:
        >>> from torch import nn
        >>> from attnkit.train import TrainConfig, build_optimizer
        >>> config = TrainConfig(max_steps=100, lr=3e-4, weight_decay=0.1)
        >>> optimizer = build_optimizer(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), config)
        >>> type(optimizer).__name__, [g["weight_decay"] for g in optimizer.param_groups]
        ('AdamW', [0.1, 0.0])
        >>> optimizer.defaults["lr"], optimizer.defaults["betas"]
        (0.0003, (0.9, 0.98))
        >>> config = TrainConfig(max_steps=100, lr=1e-2, optimizer="adafactor")
        >>> type(build_optimizer(nn.Linear(4, 4), config)).__name__
        'Adafactor'
    """
    groups = parameter_groups(
        model,
        config.weight_decay,
        decay_embeddings=config.decay_embeddings,
        layer_lr_decay=config.layer_lr_decay,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for group in groups:
        group["lr"] = config.lr * group["lr_scale"]
    if config.optimizer == "adafactor":
        return torch.optim.Adafactor(groups, lr=config.lr, foreach=True)
    kwargs = {"lr": config.lr, "betas": config.betas, "eps": config.eps}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError) as error:
        logger.info("fused AdamW unavailable (%s); using foreach", error)
        return torch.optim.AdamW(groups, foreach=True, **kwargs)
