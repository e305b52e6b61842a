"""Recipes: one YAML file per real task (``configs/*.yaml``), read by the CLI.

A recipe's ``task`` key picks its schema; ``load_recipe`` validates the file
(plus ``key=value`` overrides) into that dataclass with errors that name the
key, what was expected and what came.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnkit.recipes.captioning import CaptioningRecipe, train_captioning
from attnkit.recipes.image_classification import (
    ImageClassificationRecipe,
    train_image_classification,
)
from attnkit.recipes.language_model import LanguageModelRecipe, train_language_model
from attnkit.recipes.masked_language_model import (
    MaskedLanguageModelRecipe,
    train_masked_language_model,
)
from attnkit.recipes.node_classification import (
    NodeClassificationRecipe,
    train_node_classification,
)
from attnkit.recipes.reinforcement import ReinforcementRecipe, train_reinforcement
from attnkit.recipes.schema import ConfigError, apply_overrides, from_dict, load_yaml
from attnkit.recipes.text_classification import (
    TextClassificationRecipe,
    train_text_classification,
)
from attnkit.recipes.translation import TranslationRecipe, train_translation
from attnkit.recipes.visual_qa import VisualQARecipe, train_visual_question_answering
from attnkit.train import seed_everything

__all__ = ["RECIPES", "TRAINERS", "ConfigError", "load_recipe", "run_recipe"]

RECIPES: dict[str, type] = {
    "captioning": CaptioningRecipe,
    "visual_question_answering": VisualQARecipe,
    "translation": TranslationRecipe,
    "language_model": LanguageModelRecipe,
    "masked_language_model": MaskedLanguageModelRecipe,
    "image_classification": ImageClassificationRecipe,
    "text_classification": TextClassificationRecipe,
    "reinforcement": ReinforcementRecipe,
    "node_classification": NodeClassificationRecipe,
}
TRAINERS = {
    "captioning": train_captioning,
    "visual_question_answering": train_visual_question_answering,
    "translation": train_translation,
    "language_model": train_language_model,
    "masked_language_model": train_masked_language_model,
    "image_classification": train_image_classification,
    "text_classification": train_text_classification,
    "reinforcement": train_reinforcement,
    "node_classification": train_node_classification,
}


def run_recipe(recipe: Any, *, resume: bool = False) -> dict[str, Any]:
    """Train (and evaluate) a loaded recipe with its task's function.

    Example:
        >>> from pathlib import Path
        >>> from attnkit.recipes import load_recipe, run_recipe
        >>> _ = Path("tiny.yaml").write_text("{task: language_model, name: tiny}")
        >>> _ = Path("text.txt").write_text("to be or not to be, that is the question. " * 20)
        >>> recipe = load_recipe("tiny.yaml", [
        ...     "data.root=.", "data.corpus=text.txt", "data.block_size=16", "data.batch_size=4",
        ...     "model.d_model=16", "model.num_heads=2", "model.num_layers=1", "output_dir=run",
        ...     "train.max_steps=5", "train.progress=false", "eval_batches=2",
        ...     "sample.max_new_tokens=10"])
        >>> results = run_recipe(recipe)  # doctest: +ELLIPSIS
        val loss ... nats/char (... bits/char)...
        >>> sorted(results), Path("run/results.json").is_file()  # doctest: +NORMALIZE_WHITESPACE
        (['sample', 'summary', 'total_wall_s', 'train_wall_s', 'val_bpc', 'val_loss'], True)
    """
    seed = _recipe_seed(recipe)
    if seed is not None:
        # the Trainer seeds again when training starts; seeding here also fixes what comes
        # before it, above all the model's initial weights
        seed_everything(seed)
    return TRAINERS[recipe.task](recipe, resume=resume)


def _recipe_seed(recipe: Any) -> int | None:
    """``train.seed`` of a recipe with a training section, else its own ``seed``."""
    train = getattr(recipe, "train", None)
    return getattr(train if train is not None else recipe, "seed", None)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read ``path``, apply overrides and validate it into its task's recipe dataclass.

    Example:
        >>> from pathlib import Path
        >>> from attnkit.recipes import load_recipe
        >>> _ = Path("tiny.yaml").write_text("{task: language_model, name: tiny}")
        >>> recipe = load_recipe("tiny.yaml", ["train.max_steps=100", "data.block_size=32"])
        >>> type(recipe).__name__, recipe.train.max_steps, recipe.data.block_size
        ('LanguageModelRecipe', 100, 32)
        >>> load_recipe("tiny.yaml", ["train.lr=fast"])
        Traceback (most recent call last):
        ...
        attnkit.recipes.schema.ConfigError: tiny.yaml: train.lr must be float; got str 'fast'
    """
    data = apply_overrides(load_yaml(path), list(overrides or []))
    task = data.get("task")
    if task not in RECIPES:
        raise ConfigError(f"{path}: task must be one of {sorted(RECIPES)}; got {task!r}")
    try:
        return from_dict(RECIPES[task], data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
