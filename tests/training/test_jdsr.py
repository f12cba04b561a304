"""--task jdsr on the training side: config, the 2x model, 1x/2x patch pairing, the SIM readers of the
8-bit and raw layouts, the missing-SIM error, and tiled 2x prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import invoke, tiny_train_args, write_8bit, write_raw
from training.config import TrainConfig, UNetConfig
from training.data.layouts import ImagePair, PairSource, discover_pairs, load_pairs
from training.data.normalization import Normalization
from training.data.sampler import PatchSampler
from training.errors import UserError
from training.model import UNet
from training.predict import default_overlap, predict_image, seam_mask, tiled_predict


def _nearest_2x(image: np.ndarray) -> np.ndarray:
    return np.kron(image, np.ones((2, 2), dtype=image.dtype))


def _write_sim_8bit(root, shape=(24, 32), fovs=None):
    """The 8-bit fixture plus ROOT/{train,test}/sim/FFF_c.png at twice the size."""
    from PIL import Image

    fovs = {"train": (1, 2, 3, 71), "test": (81,)} if fovs is None else fovs
    write_8bit(root, fovs=fovs, shape=shape)
    rng = np.random.default_rng(1)
    for split, fov_list in fovs.items():
        (root / split / "sim").mkdir(parents=True, exist_ok=True)
        for fov in fov_list:
            for channel in range(2):
                sim = rng.integers(0, 256, (2 * shape[0], 2 * shape[1])).astype(np.uint8)
                Image.fromarray(sim).save(root / split / "sim" / f"{fov:03d}_{channel}.png")
    return root


def test_task_jdsr_defaults_to_the_pixel_shuffle_head_and_other_tasks_refuse_a_2x_head():
    config = TrainConfig.from_dict({"task": "jdsr"}).validate()
    assert config.model.sr_head == "shuffle" and config.model.scale == 2
    transpose = TrainConfig.from_dict({"task": "jdsr", "model": {"sr_head": "transpose"}}).validate()
    assert transpose.model.sr_head == "transpose"
    assert TrainConfig().validate().model.scale == 1
    with pytest.raises(UserError, match="model.sr_head"):
        TrainConfig.from_dict({"model": {"sr_head": "shuffle"}}).validate()
    with pytest.raises(UserError, match="model.sr_head"):
        TrainConfig.from_dict({"task": "jdsr", "model": {"sr_head": "none"}}).validate()


@pytest.mark.parametrize("head", ["shuffle", "transpose"])
def test_2x_model_doubles_y_and_x_for_any_size(head):
    model = UNet(UNetConfig(depth=2, base_channels=4, sr_head=head)).eval()
    for shape in ((1, 1, 16, 24), (2, 1, 13, 7)):
        assert model(torch.rand(shape)).shape == (shape[0], 1, 2 * shape[2], 2 * shape[3])


def test_2x_residual_adds_the_bilinearly_upsampled_input():
    model = UNet(UNetConfig(depth=2, base_channels=4, sr_head="shuffle")).eval()
    torch.nn.init.zeros_(model.head[-1].weight)
    torch.nn.init.zeros_(model.head[-1].bias)
    x = torch.rand(1, 1, 16, 16)
    expected = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 48), (10, 12)])  # larger and smaller than a patch (mirror-padded)
def test_2x_patches_stay_aligned_through_flips_and_turns(shape):
    """Target = nearest 2x upsampling of the input, so every target patch must be exactly that of its input."""
    rng = np.random.default_rng(0)
    noisy = rng.random(shape).astype(np.float32)
    source = PairSource("001_0", "001", 1, None, None)
    pair = ImagePair(source, noisy, _nearest_2x(noisy))
    sampler = PatchSampler([pair], Normalization(target="input"), 16, 8, True, np.random.default_rng(1), scale=2)
    turned = set()
    for _ in range(10):
        x, y = sampler.sample()
        assert x.shape == (8, 1, 16, 16) and y.shape == (8, 1, 32, 32)
        for patch, target in zip(x[:, 0], y[:, 0]):
            np.testing.assert_array_equal(target, _nearest_2x(patch))
            turned.add(patch.tobytes())
    # many crops and transforms were drawn; a padded small image has one crop, so its 8 flips/turns
    assert len(turned) > 40 if min(shape) >= 16 else len(turned) == 8


def test_2x_patch_origin_is_twice_the_input_origin():
    """Without augmentation, the input patch at (y, x) pairs with the target patch at (2y, 2x)."""
    height, width = 40, 48
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noisy = yy * 1000 + xx
    big_yy, big_xx = np.mgrid[0:2 * height, 0:2 * width].astype(np.float32)
    clean = big_yy * 1000 + big_xx
    pair = ImagePair(PairSource("001_0", "001", 1, None, None), noisy, clean)
    norm = Normalization("meanstd", target="input")
    x, y = PatchSampler([pair], norm, 16, 4, False, np.random.default_rng(2), scale=2).sample()
    for patch, target in zip(x[:, 0], y[:, 0]):
        top, left = divmod(int(patch[0, 0]), 1000)
        assert target[0, 0] == 2 * top * 1000 + 2 * left
        assert target[-1, -1] == (2 * top + 31) * 1000 + 2 * left + 31


def test_8bit_sim_folder_is_read_as_2x_targets(tmp_path):
    root = _write_sim_8bit(tmp_path / "w2s")
    layout, sources = discover_pairs(root, "auto", "avg1", sim=True)
    assert layout == "8bit" and len(sources) == 10
    assert all(s.target_path.parent.name == "sim" and s.target_path.name == s.input_path.name for s in sources)
    pairs = load_pairs(sources, scale=2)
    assert all(p.noisy.shape == (24, 32) and p.clean.shape == (48, 64) for p in pairs)
    from PIL import Image

    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "train" / "sim" / "002_1.png")  # not 2x
    with pytest.raises(UserError, match=r"train/avg1/002_1.png: shape \(24, 32\) does not match target .*"
                                        r"train/sim/002_1.png \(24, 32\) \(2x the input expected\)"):
        load_pairs(sources, scale=2)


def test_raw_sim_channel_npy_is_read_as_2x_targets(tmp_path):
    root = tmp_path / "raw"
    write_raw(root, channels=2, shape=(16, 16))
    rng = np.random.default_rng(0)
    for fov_dir in root.glob("Image*"):
        for channel in range(2):
            np.save(fov_dir / f"sim_channel{channel}.npy", rng.random((32, 32)).astype(np.float32))
    layout, sources = discover_pairs(root, "auto", "avg1", cache_dir=str(tmp_path / "cache"), progress=False, sim=True)
    assert layout == "raw" and [s.target_path.name for s in sources[:2]] == ["sim_channel0.npy", "sim_channel1.npy"]
    pairs = load_pairs(sources, scale=2)
    np.testing.assert_array_equal(pairs[1].clean, np.load(root / "Image001" / "sim_channel1.npy"))
    assert pairs[1].noisy.shape == (16, 16)


def test_missing_sim_targets_stop_with_one_line_naming_them(tmp_path):
    eight = write_8bit(tmp_path / "eight")
    result = invoke(tiny_train_args(tmp_path, eight, "--task", "jdsr", "--val-fovs", "071"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("w2s: error: ")
    assert f"{eight / 'train' / 'sim'}: SIM target folder not found" in lines[-1]
    assert "Traceback" not in result.output

    raw = tmp_path / "raw"
    write_raw(raw)
    result = invoke(tiny_train_args(tmp_path, raw, "--task", "jdsr", "--val-fovs", "071"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{raw / 'Image001' / 'sim_channel0.npy'}: SIM target not found" in result.output.strip().splitlines()[-1]


def test_tiled_2x_prediction_matches_whole_image_outside_the_seams():
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=4, sr_head="shuffle")).eval()
    overlap = default_overlap(model.config)
    tile = 2 * overlap + 16
    image = np.random.default_rng(0).random((3 * tile // 2, 2 * tile)).astype(np.float32) * 100
    norm = Normalization()
    whole = predict_image(model, norm, image)
    tiled = tiled_predict(model, norm, image, tile=tile)
    assert tiled.shape == whole.shape == (2 * image.shape[0], 2 * image.shape[1])
    seams = np.kron(seam_mask(image.shape, model.config, tile), np.ones((2, 2), bool))
    assert seams.any() and not seams.all()
    np.testing.assert_allclose(tiled[~seams], whole[~seams], atol=1e-4 * np.ptp(whole))
    np.testing.assert_allclose(tiled, whole, atol=1e-2 * np.ptp(whole))


def test_jdsr_picks_its_best_epoch_by_si_psnr_not_by_psnr():
    from training.blindspot import improved, selection_metric

    metric = selection_metric("auto", "jdsr", "fit")
    best = {"val_psnr": 20.0, "val_si_psnr": 30.0}
    assert improved(metric, {"val_psnr": 19.0, "val_si_psnr": 31.0}, best)
    assert not improved(metric, {"val_psnr": 25.0, "val_si_psnr": 29.0}, best)
