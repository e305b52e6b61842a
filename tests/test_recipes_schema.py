"""YAML -> dataclass validation and key=value overrides."""

from dataclasses import dataclass, field
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
