"""Config loading: defaults, presets, overrides, and errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from clipmath.experiments import config as cfg
from clipmath.experiments.config import ConfigError, dump_yaml, from_dict, parse_override, resolve


@dataclass
class Optim:
    lr: float = 1e-3
    name: Literal["adam", "sgd"] = "adam"


@dataclass
class Toy:
    seed: int = 0
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    shape: tuple[int, int] = (2, 3)
    rank: Optional[int] = None
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
