"""training.config: one typed, validated configuration; every bad value is a one-line UserError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import PRESETS, TrainConfig, UNetConfig, load_config_file, parse_fovs
from training.errors import UserError


def test_defaults_are_valid_and_round_trip_through_a_dict():
    config = TrainConfig().validate()
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.percentiles == (1.0, 99.8)


def test_flat_has_one_key_per_value():
    flat = TrainConfig().flat()
    assert flat["model.depth"] == 3 and flat["lr"] == 1e-3 and flat["percentiles"] == [1.0, 99.8]
    assert "model" not in flat
    assert {k for k in flat if k.startswith("model.")} == {f"model.{k}" for k in UNetConfig().__dict__}


def test_presets():
    assert TrainConfig.from_dict({}).model == UNetConfig()
    assert TrainConfig.from_dict({"preset": "default"}).model == UNetConfig()
    assert set(PRESETS) == {"seed", "default"}
    with pytest.raises(UserError, match="preset='big'"):
        TrainConfig.from_dict({"preset": "big"})


@pytest.mark.parametrize("data, message", [
    ({"epoch": 3}, "unknown config key(s): epoch"),
    ({"model": {"width": 3}}, "unknown model key(s): model.width"),
    ({"model": 3}, "'model' must be a mapping"),
    ({"lr": "fast"}, "invalid config value lr='fast': expected float"),
    ({"epochs": 2.5}, "invalid config value epochs=2.5: expected int"),
    ({"epochs": True}, "invalid config value epochs=True: expected int"),
    ({"model": {"depth": "abc"}}, "invalid config value model.depth='abc': expected int"),
    ({"augment": "yes"}, "invalid config value augment='yes': expected bool"),
    ({"percentiles": [1, 2, 3]}, "expected tuple of two numbers"),
    ({"val_fovs": 71}, "invalid config value val_fovs=71: expected str"),
])
def test_from_dict_rejects_unknown_keys_and_wrong_types(data, message):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict(data, source="my.yaml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_from_dict_coerces_ints_to_floats_and_lists_to_tuples():
    config = TrainConfig.from_dict({"lr": 1, "percentiles": [2, 98]})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.percentiles == (2.0, 98.0)


@pytest.mark.parametrize("changes, key", [
    ({"epochs": 0}, "epochs=0"),
    ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"patch_size": 60}, "patch_size=60"),  # not a multiple of 2**3
    ({"patch_size": 4}, "patch_size=4"),  # smaller than 2**depth
    ({"lr": 0.0}, "lr=0.0"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"layout": "tiff"}, "layout='tiff'"),
    ({"noise_level": "avg3"}, "noise_level='avg3'"),
    ({"normalization": "minmax"}, "normalization='minmax'"),
    ({"target_normalization": "target"}, "target_normalization='target'"),
    ({"percentiles": (99.0, 1.0)}, "percentiles=(99.0, 1.0)"),
    ({"percentiles": (0.0, 101.0)}, "percentiles=(0.0, 101.0)"),
    ({"loss": "huber"}, "loss='huber'"),
    ({"schedule": "step"}, "schedule='step'"),
    ({"warmup_steps": -1}, "warmup_steps=-1"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"val_max_images": -1}, "val_max_images=-1"),
    ({"panel_every": 0}, "panel_every=0"),
    ({"threads": -2}, "threads=-2"),
    ({"synthetic_noise": 1.5}, "synthetic_noise=1.5"),
    ({"synthetic_noise": 0.5, "task": "n2v"}, "synthetic_noise=0.5"),
    ({"val_fovs": "71-abc"}, "invalid val_fovs '71-abc'"),
    ({"test_fovs": "90-80"}, "invalid test_fovs '90-80'"),
    ({"model": {"depth": 0}}, "model.depth=0"),
    ({"model": {"depth": 7}}, "model.depth=7"),
    ({"model": {"base_channels": 0}}, "model.base_channels=0"),
    ({"model": {"upsample": "nearest"}}, "model.upsample='nearest'"),
    ({"model": {"in_channels": 3}}, "model.in_channels/out_channels=(3, 1)"),
])
def test_validate_names_the_bad_value(changes, key):
    config = TrainConfig.from_dict(changes)
    with pytest.raises(UserError) as info:
        config.validate()
    assert key in str(info.value)


def test_patch_size_follows_depth():
    TrainConfig.from_dict({"patch_size": 16, "model": {"depth": 4}}).validate()
    with pytest.raises(UserError, match="multiple of 2\\*\\*depth = 32"):
        TrainConfig.from_dict({"patch_size": 16, "model": {"depth": 5}}).validate()


@pytest.mark.parametrize("spec, expected", [
    ("071-080", set(range(71, 81))),
    ("071-073,095", {71, 72, 73, 95}),
    (" 5 , 7-8 ", {5, 7, 8}),
    ("", set()),
    ("042", {42}),
])
def test_parse_fovs(spec, expected):
    assert parse_fovs(spec) == expected


@pytest.mark.parametrize("spec", ["abc", "80-71", "1-2-3", "7,x"])
def test_parse_fovs_rejects_garbage(spec):
    with pytest.raises(UserError, match=f"invalid val_fovs '{spec}'"):
        parse_fovs(spec, "val_fovs")


def test_load_config_file_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 3\nmodel:\n  depth: 2\nval_fovs: '071-072'\n")
    assert load_config_file(tmp_path / "a.yaml") == {"epochs": 3, "model": {"depth": 2}, "val_fovs": "071-072"}
    (tmp_path / "b.json").write_text(json.dumps({"lr": 0.01}))
    assert load_config_file(tmp_path / "b.json") == {"lr": 0.01}


@pytest.mark.parametrize("name, text, message", [
    ("bad.yaml", "epochs: [1, 2\n", "cannot parse config"),
    ("bad.json", "{epochs: 1}", "cannot parse config"),
    ("list.yaml", "- 1\n- 2\n", "config must be a mapping"),
    ("empty.yaml", "", "config must be a mapping"),
])
def test_load_config_file_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=f"{name}: {message}"):
        load_config_file(tmp_path / name)
    with pytest.raises(UserError, match="missing.yaml: config file not found"):
        load_config_file(tmp_path / "missing.yaml")


def test_repository_configs_are_valid():
    paths = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        TrainConfig.from_dict(load_config_file(path), source=str(path)).validate()


def test_yaml_scientific_notation_is_a_float(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nweight_decay: 5e-5\n")
    config = TrainConfig.from_dict(load_config_file(tmp_path / "c.yaml")).validate()
    assert config.lr == 1e-4 and config.weight_decay == 5e-5


@pytest.mark.parametrize("changes, name", [
    ({}, "w2s-unet"), ({"task": "n2v"}, "w2s-unet"), ({"task": "jdsr"}, "w2s-unet-jdsr"),
    ({"task": "jdsr", "registered_model": "mine"}, "mine"), ({"registered_model": ""}, None),
])
def test_registered_model_name(changes, name):
    """2x jdsr models get their own registry name: models:/w2s-unet@alias always serves a same-size denoiser."""
    assert TrainConfig.from_dict(changes).registered_model_name() == name
