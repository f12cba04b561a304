"""`python -m benchmarks.combinations` on tiny 8-bit W2S data with made-up outputs whose errors are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from benchmarks.combinations import MEAN, affine_fit, blend_name, main
from conftest import write_8bit
from training.io import read_image

VAL = ["071_0", "071_1"]  # write_8bit's validation images (FOV 071, two channels)


def outputs(tmp_path, data, name, noise_seed, scale=1.0, offset=0.0):
    """Target + independent Gaussian error, in an affine frame of its own: a stand-in for a model's outputs."""
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(noise_seed)
    for image in VAL:
        target = read_image(data / "train" / "avg400" / f"{image}.png").astype(np.float32)
        tifffile.imwrite(folder / f"{image}.tif", scale * (target + rng.normal(0, 10, target.shape)) + offset)
    return folder


def test_affine_fit_recovers_scale_and_offset():
    rng = np.random.default_rng(0)
    reference = rng.random((16, 16))
    np.testing.assert_allclose(affine_fit(0.25 * reference - 3, reference), reference, atol=1e-9)


def test_mean_of_members_with_independent_errors_beats_each_and_blends_are_scored(tmp_path):
    data = write_8bit(tmp_path / "data")
    a = outputs(tmp_path, data, "a", 1)
    b = outputs(tmp_path, data, "b", 2, scale=3.0, offset=5.0)  # another frame: fitted before averaging
    same = outputs(tmp_path, data, "same", 1, scale=0.5)  # a's errors exactly
    out = tmp_path / "report.json"
    assert main(["--data", str(data), "-m", f"a={a}", "-m", f"b={b}", "--peer", f"p={same}",
                 "--weights", "0.5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    scores = report["mean_si_psnr"]
    assert report["images"] == len(VAL) and [r["image"] for r in report["per_image"]] == VAL
    # two independent errors of equal size average to half the variance: about +3 dB
    assert scores[MEAN] - max(scores["a"], scores["b"]) == pytest.approx(3.0, abs=0.6)
    assert scores["p"] == pytest.approx(scores["a"], abs=1e-6)  # an affine copy scores the same
    assert scores[blend_name("p", 0.5)] < scores[MEAN]  # blending in one member's errors again costs

    assert main(["--data", str(data), "-m", f"a={a}", "-m", f"copy={same}", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())["mean_si_psnr"]
    assert scores[MEAN] == pytest.approx(scores["a"], abs=1e-6)  # identical errors: averaging gains nothing


@pytest.mark.parametrize("args, message", [
    (["--weights", "1.5"], "--weights: 1.5 is not between 0 and 1"),
    (["--weights", "x"], "--weights 'x': expected numbers"),
    (["-m", "gone=MISSING"], "predictions folder not found"),
    ([], "give at least one member"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    data = write_8bit(tmp_path / "data")
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    members = [] if "-m" in args or not args else ["-m", f"a={outputs(tmp_path, data, 'a', 1)}"]
    assert main(["--data", str(data), *members, *args, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()
