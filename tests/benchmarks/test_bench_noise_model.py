"""benchmarks.noise_model: the fitted model's draws against the real noise, variance and skew."""

from __future__ import annotations

import json

import numpy as np
from skimage import io

from benchmarks.noise_model import main
from conftest import write_8bit
from training.data.noise_model import NoiseModel

EMCCD = NoiseModel(slope=0.8, intercept=10.0, gain=16.0, zero=6.0, low=0.0, high=255.0, integer=True)


def emccd_data(root):
    """8-bit layout whose targets are stripes of a few levels (many pixels per level) and whose noisy
    frames are EMCCD draws from them."""
    data = write_8bit(root, fovs={"train": (1, 2), "val": (71,)}, channels=1, shape=(64, 64))
    rng = np.random.default_rng(0)
    for clean_png in sorted((data / "train" / "avg400").glob("*.png")):
        clean = np.repeat(np.linspace(10, 200, 8).round(), 256 * 32).reshape(256, 256).T.astype(np.uint8)
        io.imsave(clean_png, clean, check_contrast=False)
        io.imsave(data / "train" / "avg1" / clean_png.name, EMCCD.sample(clean, rng).astype(np.uint8),
                  check_contrast=False)
    return data


def test_model_draws_match_the_real_noise_where_poisson_is_less_skewed(tmp_path, capsys):
    data = emccd_data(tmp_path / "data")
    assert main(["--data", str(data), "--split", "train", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 2 and report["unfitted"] == []
    assert report["max_neighbour_correlation"] < 0.05  # drawn pixel by pixel: white
    for name, level in report["median_by_level"].items():
        assert abs(level["variance_ratio_model"] - 1) < 0.1 and abs(level["variance_ratio_poisson"] - 1) < 0.1
        assert abs(level["skew_model"] - level["skew_real"]) < 0.15
        if name != "p90":  # at the top level clipping at 255 trims the tails of all three
            assert level["skew_poisson"] < 0.8 * level["skew_real"]  # Poisson: 1/1.5 of the EMCCD's skew
    assert "skew Poisson" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    data = write_8bit(tmp_path / "data", fovs={"train": (1,), "val": (71,)}, channels=1, shape=(32, 32))
    assert main(["--data", str(data), "--split", "train", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no train image gave a noise model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
