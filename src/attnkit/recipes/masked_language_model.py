"""Masked language modelling with a BERT-style encoder on a text file, from one YAML recipe.

The same text, split and token streams as the GPT recipe (:mod:`attnkit.recipes.language_model`):
the first ``train_fraction`` of the characters train, the rest validate. Each batch is
``batch_size`` random windows of ``block_size`` characters, corrupted by BERT's masking
(:class:`attnkit.data.collators.MaskedLMCollator`: 15% of the characters picked, then
80% ``[MASK]`` / 10% random / 10% kept); the ``[MASK]`` id is one past the tokenizer's
vocabulary. The model is :class:`attnkit.models.BertForMaskedLM`, so every self-attention
variant and positional scheme of ``BertConfig`` is a config key away (``model.attention:
block_sparse`` with a Longformer layout, ``model.attention: sliding_window``, ...): the
recipe compares them on long windows. Validation loss is the mean cross-entropy (nats)
over the picked characters of ``eval_batches`` fixed, identically masked windows. The run
directory holds ``recipe.yaml``, ``tokenizer.json``, the token streams, ``checkpoints/``,
``metrics.jsonl``, ``loss.png`` and ``results.json`` (val loss, wall time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from attnkit.data import LMWindowSource, TextTokenizer, TokenStream
from attnkit.data.collators import IGNORE_INDEX, MaskedLMBatch, MaskedLMCollator
from attnkit.data.resumable import seed_from
from attnkit.models import BertConfig, BertForMaskedLM
from attnkit.recipes.common import (
    RunRecipe,
    fit_recipe,
    reject_derived_fields,
    run_timings,
    selected_scores,
    write_results,
)
from attnkit.recipes.language_model import (
    LanguageModelData,
    mean_window_loss,
    prepare_token_streams,
    read_corpus,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import LossOutput, TrainConfig

__all__ = ["MaskedLanguageModelRecipe", "train_masked_language_model"]


@dataclass
class MaskedLanguageModelRecipe(RunRecipe):
    """A masked-LM experiment: data, encoder, masking, training, evaluation.

    ``model`` holds :class:`attnkit.models.BertConfig` fields (``vocab_size`` comes from
    the tokenizer plus the ``[MASK]`` id; ``max_len`` defaults to ``block_size``).
    """

    name: str = "masked_language_model"
    task: Literal["masked_language_model"] = "masked_language_model"
    output_dir: str | None = None
    data: LanguageModelData = field(default_factory=lambda: LanguageModelData(block_size=256))
    model: dict[str, Any] = field(default_factory=dict)
    mask_probability: float = 0.15
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=500))
    eval_batches: int = 50
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, ("vocab_size",), "the tokenizer", "; remove it")
        from_dict(BertConfig, {**self.model, "vocab_size": 2}, prefix="model")
        if not 0.0 < self.mask_probability < 1.0:
            raise ConfigError(f"mask_probability must be in (0, 1); got {self.mask_probability}")
        self._set_output_dir()

    @classmethod
    def from_dict(cls, data: dict) -> MaskedLanguageModelRecipe:
        return from_dict(cls, data)


def build_model(recipe: MaskedLanguageModelRecipe, tokenizer: TextTokenizer) -> BertForMaskedLM:
    """``BertForMaskedLM`` over the tokenizer's ids plus ``[MASK]`` (the last id)."""
    options = {"max_len": recipe.data.block_size, "pad_id": tokenizer.pad_id, **recipe.model}
    return BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size + 1, **options))


def masking(recipe: MaskedLanguageModelRecipe, tokenizer: TextTokenizer, seed: int):
    """BERT's masking with its own generator; specials are never picked."""
    return MaskedLMCollator(
        tokenizer.vocab_size + 1,
        mask_id=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        special_ids=(tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id),
        probability=recipe.mask_probability,
        generator=torch.Generator().manual_seed(seed),
    )


class MaskedWindowSource(LMWindowSource):
    """:class:`LMWindowSource` windows, masked; yields :class:`MaskedLMBatch` ``(B, T)``.

    The masking of step ``position`` in ``epoch`` is seeded like its windows, so a
    resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self, stream: TokenStream, recipe: MaskedLanguageModelRecipe, tokenizer: TextTokenizer
    ) -> None:
        super().__init__(
            stream,
            recipe.data.batch_size,
            recipe.data.block_size,
            seed=recipe.train.seed or 0,
            steps_per_epoch=recipe.data.steps_per_epoch,
        )
        self.recipe, self.tokenizer = recipe, tokenizer

    def _build(self, item: Any, epoch: int, position: int) -> MaskedLMBatch:
        windows = super()._build(item, epoch, position).x
        seed = seed_from(self.seed, epoch, position, self.rank, 1)  # 1: not the windows' seed
        return masking(self.recipe, self.tokenizer, seed)(windows)


def mlm_loss(model: torch.nn.Module, batch: MaskedLMBatch) -> LossOutput:
    """Summed cross-entropy over the picked positions (``labels != -100``)."""
    logits = model(batch.input_ids, batch.attention_mask).logits
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        batch.labels.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return LossOutput(loss, batch.num_tokens)


def _validation_fn(
    recipe: MaskedLanguageModelRecipe, stream: TokenStream, tokenizer: TextTokenizer
):
    """Mean masked-token loss over ``eval_batches`` windows, the same windows and masks
    at every evaluation."""

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        collate = masking(recipe, tokenizer, seed=4321)  # fresh: the same masks every time

        def masked_loss(model, x, _y, device) -> LossOutput:
            return mlm_loss(model, collate(x).to(device))

        loss = mean_window_loss(model, stream, recipe.data, recipe.eval_batches, masked_loss)
        return {"val_loss": loss}

    return evaluate


def train_masked_language_model(
    recipe: MaskedLanguageModelRecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Train the encoder on masked characters, select and report on validation loss."""
    started = time.monotonic()
    text = read_corpus(recipe.data)
    tokenizer, train_stream, val_stream = prepare_token_streams(recipe, text, resume)
    model = build_model(recipe, tokenizer)
    evaluate = _validation_fn(recipe, val_stream, tokenizer)
    summary, report = fit_recipe(
        model,
        mlm_loss,
        MaskedWindowSource(train_stream, recipe, tokenizer),
        recipe,
        evaluate_fn=evaluate,
        resume=resume,
    )
    if not report:
        return {"summary": summary.to_dict()}
    scores = selected_scores(summary, model.eval(), evaluate)
    results = {"val_loss": scores["val_loss"], **run_timings(summary, started)}
    write_results(recipe.output_dir, results)  # type: ignore[arg-type]
    print(f"val loss {scores['val_loss']:.4f} nats per masked character")
    return results
