"""YAML -> dataclass validation and key=value overrides."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from attnkit.recipes.schema import ConfigError, apply_overrides, from_dict, load_yaml


@dataclass
class Inner:
    size: int = 4
    rate: float = 0.5
    kind: Literal["a", "b"] = "a"
    path: str | None = None


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, int] = (1, 2)


def test_nested_dataclass_with_coercion():
    config = from_dict(Outer, {"name": "x", "inner": {"size": 8, "rate": 1}, "sizes": [3, 4]})
    assert (
        config.inner.size == 8 and config.inner.rate == 1.0 and isinstance(config.inner.rate, float)
    )
    assert config.sizes == (3, 4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "inner": {"sise": 8}}, r"unknown key\(s\) \['inner.sise'\]; inner accepts"),
        ({"name": "x", "inner": {"size": "8a"}}, r"inner.size must be int; got str '8a'"),
        ({"name": "x", "inner": {"size": True}}, r"inner.size must be int; got bool True"),
        ({"name": "x", "inner": {"kind": "c"}}, r"inner.kind must be one of \['a', 'b'\]; got 'c'"),
        ({"name": "x", "inner": 3}, r"inner must be a mapping; got int 3"),
        ({"inner": {}}, r"Outer: .*name"),
        ({"name": "x", "sizes": 3}, r"sizes must be a list; got int 3"),
    ],
)
def test_errors_name_the_key_expected_and_received(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_float_written_without_a_dot_is_accepted():
    # YAML 1.1 reads 2e-3 as a string
    assert from_dict(Inner, {"rate": "2e-3"}).rate == 0.002
    with pytest.raises(ConfigError, match="rate must be float; got str 'fast'"):
        from_dict(Inner, {"rate": "fast"})


def test_overrides_parse_yaml_values_and_create_sections():
    data = apply_overrides({"name": "x"}, ["inner.size=16", "inner.rate=2.0e-3", "inner.path=null"])
    assert data == {"name": "x", "inner": {"size": 16, "rate": 0.002, "path": None}}
    with pytest.raises(ConfigError, match=r"override must look like key\.path=value"):
        apply_overrides({}, ["inner.size"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.first=y"])


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_yaml(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(listed)


def test_malformed_yaml_in_an_override_names_the_override():
    with pytest.raises(
        ConfigError,
        match=r"override 'inner\.sizes=\[1, 2': the value '\[1, 2' is not valid YAML \(expected",
    ):
        apply_overrides({}, ["inner.sizes=[1, 2"])
    with pytest.raises(
        ConfigError, match=r"override 'name=\"x': the value '\"x' is not valid YAML"
    ):
        apply_overrides({}, ['name="x'])


@dataclass
class Pretrained:
    path: str = "model"
    pooling: Literal["cls", "mean"] = "cls"
    architecture: Literal["bert"] = "bert"


@dataclass
class Recurrent:
    architecture: Literal["lstm"]
    hidden_size: int = 8
    layers: int = 1


@dataclass
class Classifier:
    model: Pretrained | Recurrent = field(default_factory=Pretrained)


@dataclass
class Points:
    x: int = 0
    y: int = 0


@dataclass
class Box:
    width: int = 1
    height: int = 1
    depth: int = 1


@pytest.mark.parametrize(
    ("model", "message"),
    [
        # the discriminator picks the alternative; only its error is reported
        (
            {"architecture": "lstm", "hiden_size": 3},
            "unknown key(s) ['model.hiden_size']; model accepts "
            "['architecture', 'hidden_size', 'layers']",
        ),
        ({"architecture": "lstm", "layers": "2"}, "model.layers must be int; got str '2'"),
        # no discriminator given: the alternative whose default it is
        ({"pooling": "max"}, "model.pooling must be one of ['cls', 'mean']; got 'max'"),
        # a discriminator value that fits no alternative
        ({"architecture": "gru"}, "model.architecture must be one of ['bert', 'lstm']; got 'gru'"),
    ],
)
def test_union_error_is_the_intended_alternatives_only(model, message):
    with pytest.raises(ConfigError) as error:
        from_dict(Classifier, {"model": model})
    assert str(error.value) == message


@dataclass
class Shape:
    shape: Points | Box = field(default_factory=Points)


def test_union_without_discriminator_reports_the_closest_alternative():
    # Points: two unknown keys; Box: one (the typo)
    with pytest.raises(ConfigError) as error:
        from_dict(Shape, {"shape": {"width": 2, "heigth": 3}})
    assert str(error.value) == (
        "unknown key(s) ['shape.heigth']; shape accepts ['depth', 'height', 'width']"
    )


def test_union_typo_in_a_real_recipe_names_only_the_typo():
    from attnkit.recipes import load_recipe

    config = Path(__file__).resolve().parents[1] / "configs" / "sst2_bilstm.yaml"
    with pytest.raises(ConfigError) as error:
        load_recipe(config, ["model.hiden_size=64"])
    message = str(error.value)
    assert "unknown key(s) ['model.hiden_size']; model accepts [" in message
    assert "'model.embed_dim'" not in message and " / " not in message
