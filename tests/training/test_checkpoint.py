"""training.checkpoint: one safe file (weights_only loadable) that rebuilds the exact trained model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt
from training.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.layouts import discover_pairs, load_pairs
from training.data.normalization import Normalization
from training.data.split import split_by_fov
from training.errors import UserError
from training.model import UNet
from training.predict import predict_image
from training.trainer import validate


def tiny_payload(depth=2, seed=0):
    torch.manual_seed(seed)
    config = TrainConfig.from_dict({"model": {"depth": depth, "base_channels": 4}, "patch_size": 16}).validate()
    model = UNet(config.model)
    for p in model.parameters():  # not the zero-ish init: make every weight matter
        torch.nn.init.normal_(p, std=0.2)
    norm = Normalization("percentile", 1.0, 99.5, target="input")
    return model, config, norm, {"model_state": model.state_dict(), "config": config.to_dict(),
                                 "normalization": norm.to_dict()}


def test_save_then_load_reproduces_weights_exactly_and_predictions_to_float_rounding(tmp_path):
    model, config, norm, payload = tiny_payload()
    save_checkpoint(tmp_path / "m.pt", payload)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config == config
    assert loaded.normalization == norm
    assert not loaded.model.training
    image = np.random.default_rng(0).uniform(100, 400, (37, 50)).astype(np.float32)
    expected = predict_image(model.eval(), norm, image)
    loaded_state = loaded.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded_state[name], tensor), name
    # On CPU the loaded model runs in channels_last (faster); only the order of float sums differs.
    np.testing.assert_allclose(predict_image(loaded.model, loaded.normalization, image), expected, rtol=1e-5)
    assert loaded.checkpoint["format"] == FORMAT
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == FORMAT


def test_a_directory_means_its_best_pt(tmp_path):
    *_, payload = tiny_payload()
    save_checkpoint(tmp_path / "best.pt", payload)
    assert read_checkpoint(tmp_path)["config"] == payload["config"]


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_trained_checkpoints_load_with_weights_only(tiny_training, name):
    state = torch.load(tiny_training.full_dir / name, map_location="cpu", weights_only=True)
    assert state["format"] == FORMAT
    assert state["epoch"] == (2 if name == "last.pt" else state["best_epoch"])
    assert len(state["history"]) == state["epoch"]
    assert ("optimizer" in state) == (name == "last.pt")
    assert state["data_layout"] == "8bit" and state["noise_level"] == "avg1"
    assert state["split"] == {"train": ["001", "002", "003"], "val": ["071"], "test": ["081"]}
    if name == "last.pt":
        assert set(state["rng"]) == {"torch", "numpy", "numpy_ranks"}
        assert {"optimizer", "scheduler", "scaler"} <= set(state)


def test_best_checkpoint_reproduces_its_validation_scores(tiny_training):
    """load_model(best.pt) + the split it records give back exactly the val metrics logged at the best epoch."""
    loaded = load_model(tiny_training.full_dir / "best.pt")
    _, sources = discover_pairs(tiny_training.data, "auto", "avg1")
    val = load_pairs(split_by_fov(sources, loaded.config.val_fovs, loaded.config.test_fovs).val)
    scores = validate(loaded.model, loaded.normalization, val, torch.device("cpu"), torch.nn.L1Loss())
    best = loaded.checkpoint["best_metrics"]
    for key in ("val_psnr", "val_ssim", "val_si_psnr", "val_loss"):
        assert scores[key] == pytest.approx(best[key], rel=1e-6, abs=1e-6), key


def test_missing_and_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="nope.pt: checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "notes.pt").write_text("just text\n")
    with pytest.raises(UserError, match="notes.pt: not a loadable w2s checkpoint"):
        load_model(tmp_path / "notes.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=f"other.pt: not a w2s checkpoint \\(missing format '{FORMAT}'\\)"):
        load_model(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(UserError, match="tensor.pt: not a w2s checkpoint"):
        load_model(tmp_path / "tensor.pt")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_that_would_run_code_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"format": FORMAT, "x": Evil()}, handle)
    with pytest.raises(UserError, match="evil.pt: not a loadable w2s checkpoint"):
        load_model(tmp_path / "evil.pt")
    assert "this must never run" not in capsys.readouterr().out


def test_weights_that_do_not_fit_the_config_are_user_errors(tmp_path):
    *_, payload = tiny_payload(depth=2)
    payload["config"]["model"]["depth"] = 3
    save_checkpoint(tmp_path / "wrong.pt", payload)
    with pytest.raises(UserError, match="wrong.pt: weights do not fit the model config"):
        load_model(tmp_path / "wrong.pt")
    *_, payload = tiny_payload(depth=2)
    payload["model_state"]["head.weight"] = torch.zeros(1, 5, 1, 1)
    save_checkpoint(tmp_path / "shape.pt", payload)
    with pytest.raises(UserError, match="shape.pt: weights do not fit"):
        load_model(tmp_path / "shape.pt")


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    *_, payload = tiny_payload(seed=0)
    save_checkpoint(tmp_path / "last.pt", payload)
    before = (tmp_path / "last.pt").read_bytes()

    def torn_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", tiny_payload(seed=1)[-1])
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_code_version_names_the_commit():
    version = ckpt.code_version()
    assert version and version != "unknown"
