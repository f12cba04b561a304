"""Acceptance: our metrics reproduce scores computed outside this project on real W2S data.

../shared/data/w2s-8bit, FOVs 071-080 (30 pairs avg1 -> avg400), reference values from its README.
Skipped when the shared data folder is absent (it is never copied into the repository).
"""

from __future__ import annotations

import pytest

from evaluation.evaluate import score_predictions
from evaluation_fixtures import SHARED_DATA, no_repo_mlflow  # noqa: F401

W2S_8BIT = SHARED_DATA / "w2s-8bit"
REFERENCE = {  # method: (PSNR, SI-PSNR, SSIM)
    "noisy input": (18.52, 19.29, 0.2101),
    "VST+BM3D": (23.45, 32.11, 0.7270),
    "Noise2Noise": (26.70, 31.19, 0.8283),
}

pytestmark = pytest.mark.skipif(not (W2S_8BIT / "peers" / "vst-bm3d").is_dir(),
                                reason=f"shared W2S data not found at {W2S_8BIT}")


def test_shared_data_is_found_relative_to_the_repository():
    assert SHARED_DATA.name == "data" and SHARED_DATA.parent.name == "shared"
    assert (W2S_8BIT / "train" / "avg400").is_dir()


@pytest.mark.slow  # about 80 s on 2 busy cores: 90 images x 4 metrics at 512x512
def test_peer_outputs_score_as_published(tmp_path):
    result = score_predictions({"VST+BM3D": W2S_8BIT / "peers" / "vst-bm3d",
                                "Noise2Noise": W2S_8BIT / "peers" / "noise2noise"},
                               W2S_8BIT, split="val", noise_level="avg1", out_dir=tmp_path, panels=1, progress=False)
    assert result.summary["data"]["split"] == "val" and result.summary["n_images_scored"] == 30
    assert all(name[:3] in {f"{f:03d}" for f in range(71, 81)} for name in result.summary["data"]["images"])
    for method, (psnr, si_psnr, ssim) in REFERENCE.items():
        means = result.summary["methods"][method]["mean"]
        assert means["psnr"] == pytest.approx(psnr, abs=0.01), method
        assert means["si_psnr"] == pytest.approx(si_psnr, abs=0.01), method
        assert means["ssim"] == pytest.approx(ssim, abs=0.001), method
        assert 0 < means["ms_ssim"] <= 1
    assert "**30 of 30 images scored**" in result.table
