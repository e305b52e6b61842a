"""YAML configs validated into dataclasses, with ``key=value`` overrides.

Unknown keys and mistyped values fail loudly with the dotted key, what was
expected and what came, e.g. ``model.d_model must be int; got str '256a'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = ["ConfigError", "apply_overrides", "from_dict", "load_yaml", "to_dict"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema.

    Example:
        >>> from attnkit.recipes import ConfigError
        >>> issubclass(ConfigError, ValueError)  # caught by ``except ValueError``
        True
    """


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; converts int -> float, dict -> dataclass."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, get_args(tp), key)
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key} must be one of {list(get_args(tp))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list; got {type(value).__name__} {value!r}")
        item_type = (get_args(tp) or (Any,))[0]
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping; got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "2e-3" (no dot) as a string; accept what float() accepts.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be float; got str {value!r}") from None
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key} must be {tp.__name__}; got bool {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key} must be {_type_name(tp)}; got {type(value).__name__} {value!r}")
    return value


def _coerce_union(value: Any, options: tuple[Any, ...], key: str) -> Any:
    """``value`` as the first alternative that accepts it.

    When none does, only the intended alternative's error is reported (see
    :func:`_intended_alternative`), not one error per alternative.
    """
    if value is None and type(None) in options:
        return None
    errors: dict[Any, str] = {}
    for option in (o for o in options if o is not type(None)):
        try:
            return _coerce(value, option, key)
        except ConfigError as error:
            errors[option] = str(error)
    if len(errors) == 1:
        raise ConfigError(next(iter(errors.values())))
    intended = _intended_alternative(value, list(errors), key)
    if intended is None:
        raise ConfigError(f"{key}: {' / '.join(errors.values())}")
    raise ConfigError(errors[intended])


def _intended_alternative(value: Any, options: list[Any], key: str) -> Any:
    """Which dataclass alternative a mapping meant (``None``: not a mapping of dataclasses).

    By a discriminator first: a field that every alternative types as a ``Literal``
    (e.g. ``architecture``), its value taken from the mapping or else the field's
    default. Otherwise the alternative with the fewest unknown keys (the first on ties).
    Raises ``ConfigError`` when the mapping's discriminator value fits no alternative.
    """
    if not isinstance(value, dict) or not all(dataclasses.is_dataclass(o) for o in options):
        return None
    for name, allowed in _discriminators(options).items():
        chosen = [
            o for o, values in zip(options, allowed, strict=True) if _tag(o, value, name) in values
        ]
        if len(chosen) == 1:
            return chosen[0]
        if name in value and not chosen:
            every = [v for values in allowed for v in values]
            raise ConfigError(f"{key}.{name} must be one of {every}; got {value[name]!r}")
    return min(options, key=lambda o: len(set(value) - {f.name for f in dataclasses.fields(o)}))


def _discriminators(options: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Field names typed ``Literal`` in every dataclass of ``options`` -> each one's values."""
    hints = [get_type_hints(o) for o in options]
    shared = set.intersection(*(set(h) for h in hints))
    return {
        name: [get_args(h[name]) for h in hints]
        for name in sorted(shared)
        if all(get_origin(h[name]) is typing.Literal for h in hints)
    }


def _tag(option: Any, value: dict, name: str) -> Any:
    """``value[name]``, else the default of ``option``'s field ``name`` (``MISSING``: none)."""
    if name in value:
        return value[name]
    field = next(f for f in dataclasses.fields(option) if f.name == name)
    return field.default


def from_dict(cls: type[T], data: Any, *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and value types recursively."""
    where = prefix or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping; got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        dotted = [f"{prefix}.{k}" if prefix else k for k in unknown]
        raise ConfigError(f"unknown key(s) {dotted}; {where} accepts {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"{where}: {error}") from None
    except ValueError as error:  # the dataclass's own validation
        raise ConfigError(f"{where}: {error}") from None


def to_dict(config: Any) -> dict:
    """A plain, YAML-serialisable dict of a (nested) dataclass."""
    return dataclasses.asdict(config)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping; got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override must look like key.path=value; got {override!r}")
        dotted, raw = override.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node[keys[-1]] = _override_value(override, raw)
    return data


def _override_value(override: str, raw: str) -> Any:
    """The YAML value of ``raw`` (empty: ``None``); errors name the whole override."""
    if not raw.strip():
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"override {override!r}: the value {raw!r} is not valid YAML ({problem}); "
            "expected a YAML value such as 3, 1e-4, true, [0.9, 0.99] or 'quoted text'"
        ) from None
