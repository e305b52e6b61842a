"""Yes/no visual question answering on Fashion-MNIST with cross-attention fusion.

Questions are generated from the labels (:mod:`attnkit.data.visual_questions`):
training questions about train-split images (drawn afresh every epoch),
validation questions about held-out train-split images (select the best
checkpoint), test questions about the held-out test-split images. The run
directory holds ``recipe.yaml``, ``checkpoints/``, ``metrics.jsonl`` and
``results.json``: test accuracy overall, per question and for yes/no answers,
and the share of "yes" answers in the test set (0.5 up to sampling noise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from attnkit.data.visual_questions import (
    QUESTIONS,
    QuestionBatch,
    QuestionBatcher,
    VisualQuestions,
    load_question_splits,
    question_vocabulary,
)
from attnkit.models.fusion import CrossAttentionFusion, FusionConfig
from attnkit.recipes.common import (
    RunRecipe,
    fit_recipe,
    prepare_run_dir,
    reject_derived_fields,
    run_timings,
    training_order_seed,
    with_vocabulary,
    write_results,
)
from attnkit.recipes.schema import from_dict
from attnkit.train import LossOutput, TrainConfig

__all__ = [
    "QuestionData",
    "VisualQARecipe",
    "answer_accuracy",
    "train_visual_question_answering",
]


@dataclass
class QuestionData:
    """Fashion-MNIST questions (``root``: the Fashion-MNIST folder; default the data root).

    ``test_per_image`` questions are asked about every test image; ``limit_*``
    cut the data for quick runs. ``seed`` fixes the hold-out and the test questions;
    ``train.seed`` the training questions and their order.
    """

    dataset: Literal["fashion_mnist_questions"] = "fashion_mnist_questions"
    root: str | None = None
    seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 500
    valid_images: int = 2000
    test_per_image: int = 1
    limit_train_images: int | None = None
    limit_test_images: int | None = None


@dataclass
class VisualQARecipe(RunRecipe):
    """A VQA experiment; ``model`` holds :class:`FusionConfig` fields (``vocab_size``
    and ``pad_id`` come from the question vocabulary)."""

    name: str = "visual_question_answering"
    task: Literal["visual_question_answering"] = "visual_question_answering"
    output_dir: str | None = None
    data: QuestionData = field(default_factory=QuestionData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=3000))
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, ("vocab_size", "pad_id"), "the question vocabulary")
        from_dict(FusionConfig, _model_fields(self.model), prefix="model")
        self._set_output_dir()


def _model_fields(model: dict[str, Any]) -> dict[str, Any]:
    return with_vocabulary(question_vocabulary(), model)


def build_model(recipe: VisualQARecipe) -> CrossAttentionFusion:
    """The recipe's :class:`CrossAttentionFusion`."""
    return CrossAttentionFusion(FusionConfig(**_model_fields(recipe.model)))


def answer_loss(model: torch.nn.Module, batch: QuestionBatch) -> LossOutput:
    """Summed cross-entropy of the answers, and the batch accuracy."""
    logits = model(batch.pixel_values, batch.input_ids, batch.attention_mask).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum")
    accuracy = (logits.argmax(-1) == batch.labels).float().mean()
    return LossOutput(loss, batch.labels.numel(), {"accuracy": accuracy})


@torch.no_grad()
def _predict(model: torch.nn.Module, questions: VisualQuestions, batch_size: int) -> torch.Tensor:
    """Predicted answers ``(N,)`` (model in eval mode, restored after)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions = []
    try:
        for batch in questions.batches(batch_size):
            batch = batch.to(device)
            logits = model(batch.pixel_values, batch.input_ids, batch.attention_mask).logits
            predictions.append(logits.argmax(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions)


def answer_accuracy(
    model: torch.nn.Module, questions: VisualQuestions, batch_size: int = 500
) -> dict[str, Any]:
    """Accuracy overall, on yes and on no answers, and per question template."""
    correct = _predict(model, questions, batch_size) == questions.answers
    yes = questions.answers == 1
    per_question = {
        QUESTIONS[q].text: float(correct[questions.questions == q].float().mean())
        for q in questions.questions.unique().tolist()
    }
    return {
        "accuracy": float(correct.float().mean()),
        "accuracy_yes": float(correct[yes].float().mean()) if bool(yes.any()) else None,
        "accuracy_no": float(correct[~yes].float().mean()) if bool((~yes).any()) else None,
        "yes_share": float(yes.float().mean()),
        "questions": len(questions),
        "per_question": per_question,
    }


def train_visual_question_answering(
    recipe: VisualQARecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Train the fusion model, select on validation accuracy, report test accuracy."""
    started = time.monotonic()
    data = recipe.data
    splits = load_question_splits(
        data.root,
        seed=data.seed,
        valid_images=data.valid_images,
        test_per_image=data.test_per_image,
        limit_train_images=data.limit_train_images,
        limit_test_images=data.limit_test_images,
    )
    out = prepare_run_dir(recipe)
    model = build_model(recipe)
    source = QuestionBatcher(
        splits.train_images,
        splits.train_labels,
        data.batch_size,
        seed=training_order_seed(recipe),
    )

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        scores = answer_accuracy(model, splits.valid, data.eval_batch_size)
        return {"valid_accuracy": scores["accuracy"]}

    summary, report = fit_recipe(
        model, answer_loss, source, recipe, evaluate_fn=evaluate, resume=resume
    )
    if not report:
        return {"summary": summary.to_dict()}
    scores = answer_accuracy(model, splits.test, data.eval_batch_size)
    results = write_results(out, {"test": scores, **run_timings(summary, started)})
    print(
        f"test accuracy {100 * scores['accuracy']:.2f}% on {scores['questions']} questions "
        f"about held-out test images"
    )
    return results
