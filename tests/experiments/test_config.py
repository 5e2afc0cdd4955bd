"""Config loading: defaults, presets, overrides, and errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from clipmath.experiments import config as cfg
from clipmath.experiments.config import ConfigError, dump_yaml, from_dict, parse_override, resolve


@dataclass
class Optim:
    lr: float = 1e-3
    name: Literal["adam", "sgd"] = "adam"
    params: dict = field(default_factory=dict)


@dataclass
class Toy:
    seed: int = 0
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    shape: tuple[int, int] = (2, 3)
    rank: int | None = None
    verbose: bool = False
    optim: Optim = field(default_factory=Optim)


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump({"paper": {"optim": {"lr": 1e-4}, "sizes": [5]}}))
    monkeypatch.setattr(cfg, "PRESET_DIR", tmp_path)
    return tmp_path


def test_defaults_are_the_quick_preset(preset_dir):
    assert resolve(Toy, "toy") == Toy()


def test_preset_overrides_only_what_it_names(preset_dir):
    toy = resolve(Toy, "toy", "paper")
    assert toy.optim.lr == 1e-4 and toy.optim.name == "adam" and toy.sizes == [5]


def test_set_overrides_parse_yaml_values(preset_dir):
    toy = resolve(Toy, "toy", "paper", ["optim.name=sgd", "rank=3", "shape=[4, 5]", "verbose=true", "optim.lr=2"])
    assert toy.optim == Optim(lr=2.0, name="sgd")
    assert toy.rank == 3 and toy.shape == (4, 5) and toy.verbose is True


def test_a_dict_field_takes_new_keys_and_a_dataclass_does_not(preset_dir):
    toy = resolve(Toy, "toy", "quick", ["optim.params.beta=0.9", "optim.params.eps=1e-8"])
    assert toy.optim.params == {"beta": 0.9, "eps": 1e-8}
    with pytest.raises(ConfigError, match="'optim.params.beta'"):
        resolve(Toy, "toy", "quick", ["optim.params.beta.x=1"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.momentum=0.9", "'optim.momentum'"),
        ("nope=1", "'nope'"),
        ("seed.x=1", "'seed'"),
        ("optim.name=rmsprop", "'optim.name'"),
        ("seed=1.5", "'seed'"),
        ("verbose=3", "'verbose'"),
        ("shape=[1]", "'shape'"),
        ("sizes=[1, a]", "'sizes[1]'"),
        ("rank=x", "'rank'"),
        ("seed", "key.sub=value"),
    ],
)
def test_bad_override_names_the_key(preset_dir, override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        resolve(Toy, "toy", "quick", [override])


def test_unknown_preset_lists_the_available_ones(preset_dir):
    with pytest.raises(ConfigError, match="paper"):
        resolve(Toy, "toy", "huge")


def test_unknown_key_in_mapping_is_an_error():
    with pytest.raises(ConfigError, match="'optim.beta'"):
        from_dict(Toy, {"optim": {"beta": 1}})


def test_partial_nested_mapping_keeps_other_defaults():
    assert from_dict(Toy, {"optim": {"lr": 0.5}}).optim == Optim(lr=0.5)


def test_yaml_round_trip():
    toy = Toy(rank=2, sizes=[3], optim=Optim(lr=0.25, name="sgd"))
    assert from_dict(Toy, yaml.safe_load(dump_yaml(toy))) == toy


def test_parse_override_keeps_equals_in_value():
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1e-3", 1e-3),
        ("5E+2", 500.0),
        ("-2.5e-4", -2.5e-4),
        ("1.5e3", 1500.0),
        ("3e0", 3.0),
        ("0.001", 0.001),
        ("7", 7),
        ("1e3abc", "1e3abc"),
        ("e3", "e3"),
        ("1e", "1e"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("'1e-3'", "1e-3"),
        ("[1e-3, 2]", [1e-3, 2]),
    ],
)
def test_overrides_read_the_float_syntax_users_type(raw, value):
    """YAML 1.1 reads 1e-3 as a string; 1e-3 in --set (the --help example) is the float."""
    parsed = parse_override(f"x={raw}")[1]
    assert parsed == value and type(parsed) is type(value)


def test_help_example_lr_override_resolves(preset_dir):
    assert resolve(Toy, "toy", "quick", ["optim.lr=1e-3"]).optim.lr == 1e-3


def test_presets_read_the_same_floats(preset_dir):
    (preset_dir / "toy.yaml").write_text("small:\n  optim:\n    lr: 3e-5\n")
    assert resolve(Toy, "toy", "small").optim.lr == 3e-5


@pytest.mark.parametrize("override", ["optim=[1,", "optim.lr={a", "optim.name='sgd", "rank=\t1: 2"])
def test_malformed_yaml_in_an_override_is_a_config_error_naming_it(preset_dir, override):
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        resolve(Toy, "toy", "quick", [override])
    assert repr(override) in str(info.value) or override in str(info.value)


@pytest.mark.parametrize("data", [None, [1, 2], "seed: 1"])
def test_a_config_that_is_not_a_mapping_is_named(data):
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Toy, data)
    with pytest.raises(ConfigError, match="'optim': expected a mapping"):
        from_dict(Toy, {"optim": data})


def test_nan_is_never_a_float_value():
    with pytest.raises(ConfigError, match="'optim.lr': expected float, got nan"):
        from_dict(Toy, {"optim": {"lr": float("nan")}})
    assert from_dict(Toy, {"optim": {"lr": float("inf")}}).optim.lr == float("inf")  # bounds are the dataclass's


@dataclass
class Checked:
    size: int = 2
    inner: Optim = field(default_factory=Optim)

    def __post_init__(self):
        cfg.check_values(
            ("size", self.size, self.size >= 1, "an integer >= 1"),
            ("inner.lr", self.inner.lr, self.inner.lr > 0, "a number > 0"),
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"size": 0}, "size=0: expected an integer >= 1"),
        ({"inner": {"lr": -1}}, "inner.lr=-1.0: expected a number > 0"),
    ],
)
def test_a_dataclass_checks_its_values_when_loaded(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Checked, data)
