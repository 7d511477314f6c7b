"""Recipes load for every architecture; overrides parse; unknown keys name the closest valid key."""

from __future__ import annotations

import pytest

from sr_runtime.archs import ARCHS
from sr_runtime.errors import ConfigError
from sr_train.config import apply_overrides, config_to_dict, load_config, recipe_path


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_architecture_has_a_recipe_that_loads(name):
    path = recipe_path(name, ARCHS[name].scales[-1])
    assert path is not None, f"no recipe for {name}"
    assert "sr-train" in path.read_text().split("model:")[0], "the header comment must give the command"
    cfg = load_config(path, [f"model.scale={ARCHS[name].scales[-1]}"])
    assert cfg.model.name == name


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["optim.lr=2e-4", "steps=7", "data.train=[a, b]", "model.hparams.n_units=25", "amp=bf16"])
    assert cfg.optim.lr == 2e-4 and cfg.steps == 7 and cfg.data.train == ["a", "b"]
    assert cfg.model.hparams == {"n_units": 25} and cfg.amp == "bf16"


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'lr'"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(None, ["stepz=1"])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  schedular: cosine\n")
    with pytest.raises(ConfigError, match="did you mean 'scheduler'"):
        load_config(path)


def test_invalid_values_name_the_field():
    with pytest.raises(ConfigError, match="optim.scheduler"):
        load_config(None, ["optim.scheduler=linear"])
    with pytest.raises(ConfigError, match="loss.kind"):
        load_config(None, ["loss.kind=l3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])


def test_config_round_trips_through_a_dict():
    cfg = load_config(None, ["optim.betas=[0.8, 0.9]"])
    from sr_train.config import config_from_dict

    assert config_from_dict(config_to_dict(cfg)) == cfg
