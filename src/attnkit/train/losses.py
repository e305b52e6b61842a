"""Losses as the Trainer sees them: a sum over tokens and the number of tokens.

A loss function is ``loss_fn(model, batch) -> LossOutput``. Returning the *sum*
(not the mean) lets the Trainer divide by the tokens of the whole optimizer
step — every accumulation micro-batch and, under DDP, every rank — so that the
gradient does not depend on how the global batch was split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.functional import cross_entropy
from attnkit.models.transformer import Transformer
from attnkit.train.distributed import unwrap_model

__all__ = [
    "LossFn",
    "LossOutput",
    "call_model",
    "label_smoothed_cross_entropy",
    "model_output_loss",
    "seq2seq_loss",
]


@dataclass
class LossOutput:
    """``loss_sum``: scalar sum over tokens; ``num_tokens``: how many; ``logs``: extra values.

    ``logs`` values (floats or scalar tensors) are averaged over the step's
    micro-batches and written to the metrics log with the loss.

    Example:
        >>> import torch
        >>> from attnkit.train import LossOutput
        >>> def mse_loss(model, batch):  # a LossFn: the sum and its count, not the mean
        ...     x, y = batch
        ...     squared = (model(x) - y).pow(2)
        ...     return LossOutput(squared.sum(), squared.numel(), {"max": squared.max()})
        >>> out = mse_loss(torch.nn.Identity(), (torch.full((2, 3), 2.0), torch.zeros(2, 3)))
        >>> out.loss_sum.item(), out.num_tokens, out.logs["max"].item()
        (24.0, 6, 4.0)
    """

    loss_sum: Tensor
    num_tokens: int | Tensor
    logs: dict[str, float | Tensor] = field(default_factory=dict)


LossFn = Callable[[nn.Module, Any], LossOutput]


def label_smoothed_cross_entropy(
    logits: Tensor, targets: Tensor, *, pad_id: int | None, smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed cross-entropy over the non-pad targets.

    Args:
        logits: ``(B, T, V)`` (or ``(N, V)``) unnormalised scores; half
            precision is computed in float32.
        targets: ``(B, T)`` (or ``(N,)``) class ids; ``pad_id`` positions are ignored.
        pad_id: id to ignore, or ``None`` to count every position.
        smoothing: ``eps`` in ``[0, 1)``: the target distribution is
            ``(1 - eps) * one_hot + eps / V`` (as ``torch.nn.functional.cross_entropy``'s
            ``label_smoothing``).

    Returns:
        ``(loss_sum, num_tokens)``: scalar float32 (or float64) sum and int64 count.

    Example:
        >>> import torch
        >>> from attnkit.train import label_smoothed_cross_entropy
        >>> logits = torch.tensor([[[0.0, 4.0, 0.0], [4.0, 0.0, 0.0]]])  # (B, T, V) = (1, 2, 3)
        >>> targets = torch.tensor([[1, 0]])  # (B, T); the second position is padding
        >>> for eps in (0.0, 0.1):  # smoothing penalises the confident right answer
        ...     loss, count = label_smoothed_cross_entropy(logits, targets, pad_id=0, smoothing=eps)
        ...     print(count.item(), round(loss.item(), 3))
        1 0.036
        1 0.303
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            "logits must be targets' shape plus a vocabulary dim; got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing}")
    ignore = -100 if pad_id is None else pad_id
    loss_sum = cross_entropy(  # attnkit's: torch's values, a cheaper smoothed backward
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=ignore,
        label_smoothing=smoothing,
        reduction="sum",
    )
    return loss_sum, (targets != ignore).sum()


def seq2seq_loss(
    pad_id: int,
    smoothing: float = 0.0,
    forward: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
) -> LossFn:
    """Loss for encoder-decoder models on ``src, tgt_in, tgt_out`` batches.

    ``logits = forward(model, batch.src, batch.tgt_in)``, e.g.
    ``lambda m, s, t: m(s, decoder_input_ids=t).logits`` for T5; the loss is
    :func:`label_smoothed_cross_entropy` against ``batch.tgt_out``. Without
    ``forward``, an attnkit ``Transformer`` (also inside DDP, FSDP2 or ``torch.compile``) is called
    as ``model(src, tgt_in, labels=tgt_out, ...)``, which computes the same
    loss without holding the ``(B, T, V)`` logits
    (:func:`attnkit.functional.linear_cross_entropy`); any other model as
    ``model(src, tgt_in)`` for its logits. The logs carry the teacher-forced
    ``token_accuracy``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from attnkit.models import Transformer, TransformerConfig
        >>> from attnkit.train import seq2seq_loss
        >>> model = Transformer.from_config(TransformerConfig(
        ...     12, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1))
        >>> batch = SimpleNamespace(src=torch.tensor([[5, 6, 7, 0]]),  # (B, S), 0 = pad
        ...     tgt_in=torch.tensor([[1, 5, 6, 7]]), tgt_out=torch.tensor([[5, 6, 7, 0]]))
        >>> out = seq2seq_loss(pad_id=0, smoothing=0.1)(model, batch)
        >>> out.num_tokens.item(), out.loss_sum.shape, list(out.logs)
        (3, torch.Size([]), ['token_accuracy'])
    """

    def logits_loss(model: nn.Module, batch: Any) -> LossOutput:
        call = forward or (lambda model, src, tgt_in: model(src, tgt_in))
        logits = call(model, batch.src, batch.tgt_in)
        loss_sum, num_tokens = label_smoothed_cross_entropy(
            logits, batch.tgt_out, pad_id=pad_id, smoothing=smoothing
        )
        with torch.no_grad():
            real = batch.tgt_out != pad_id
            correct = ((logits.argmax(-1) == batch.tgt_out) & real).sum()
        return _with_accuracy(loss_sum, num_tokens, correct)

    def loss_fn(model: nn.Module, batch: Any) -> LossOutput:
        if forward is not None or not isinstance(unwrap_model(model), Transformer):
            return logits_loss(model, batch)
        out = model(
            batch.src,
            batch.tgt_in,
            labels=batch.tgt_out,
            label_smoothing=smoothing,
            ignore_index=pad_id,
        )
        return _with_accuracy(out.loss_sum, out.num_tokens, out.correct)

    return loss_fn


def _with_accuracy(loss_sum: Tensor, num_tokens: Tensor, correct: Tensor) -> LossOutput:
    accuracy = correct.detach() / num_tokens.clamp_min(1)
    return LossOutput(loss_sum, num_tokens, {"token_accuracy": accuracy})


def call_model(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for mappings and dataclasses, ``model(*batch)`` for tuples and lists,
    else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return model(**{f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)})
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def model_output_loss(model: nn.Module, batch: Any) -> LossOutput:
    """Default loss: the model's own mean ``output.loss`` (e.g. GPT, BERT, T5 outputs).

    The mean is turned back into a sum with ``output.num_tokens`` if the output
    has it, else ``batch.num_tokens``, else 1 (then micro-batches count equally).
    The batch is passed to the model as :func:`call_model` does.

    Example:
        >>> import torch
        >>> from attnkit.models import GPT, GPTConfig
        >>> from attnkit.train import model_output_loss
        >>> gpt = GPT(GPTConfig(vocab_size=20, max_len=8, d_model=16, num_heads=2, num_layers=1))
        >>> gpt = gpt.eval()  # no dropout, so both calls below see the same function
        >>> ids = torch.tensor([[1, 2, 3, 4, 5]])
        >>> out = model_output_loss(gpt, {"input_ids": ids, "labels": ids})  # gpt(**batch)
        >>> out.num_tokens, torch.allclose(out.loss_sum, gpt(input_ids=ids, labels=ids).loss)
        (1, True)
    """
    output = call_model(model, batch)
    loss = getattr(output, "loss", None)
    if loss is None:
        raise ValueError(
            f"model_output_loss needs a model output with .loss; got {type(output).__name__} "
            "(pass a loss_fn, e.g. seq2seq_loss(pad_id), for models returning logits)"
        )
    num_tokens = getattr(output, "num_tokens", None)
    if num_tokens is None:
        num_tokens = getattr(batch, "num_tokens", None)
    if num_tokens is None:
        num_tokens = 1
    return LossOutput(loss * num_tokens, num_tokens)
