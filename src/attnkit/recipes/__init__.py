"""Recipes: one YAML file per real task (``configs/*.yaml``), read by the CLI.

A recipe's ``task`` key picks its schema; ``load_recipe`` validates the file
(plus ``key=value`` overrides) into that dataclass with errors that name the
key, what was expected and what came.
"""

from __future__ import annotations

from pathlib import Path

from attnkit.recipes.schema import ConfigError, apply_overrides, from_dict, load_yaml
from attnkit.recipes.translation import TranslationRecipe

__all__ = ["RECIPES", "ConfigError", "load_recipe"]

RECIPES = {"translation": TranslationRecipe}


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> TranslationRecipe:
    """Read ``path``, apply overrides and validate it into its task's recipe dataclass."""
    data = apply_overrides(load_yaml(path), list(overrides or []))
    task = data.get("task")
    if task not in RECIPES:
        raise ConfigError(f"{path}: task must be one of {sorted(RECIPES)}; got {task!r}")
    try:
        return from_dict(RECIPES[task], data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
