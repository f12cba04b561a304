"""training.data.synthetic: the embedded demo data is deterministic and in W2S's raw layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.layouts import detect_layout, discover_pairs, load_pairs
from training.superres import upsample
from training.data.synthetic import SyntheticSpec, blur, ensure_synthetic_w2s, scene_structures, sim_image

TINY = SyntheticSpec(fovs=(1, 2, 71), channels=2, frames=4, size=32, seed=5)


def file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return ensure_synthetic_w2s(tmp_path_factory.mktemp("synthetic") / "demo", TINY)


def test_written_in_the_raw_layout(tiny_demo):
    assert sorted(file_bytes(tiny_demo)) == [f"Image{f:03d}/{kind}_channel{c}.npy" for f in (1, 2, 71)
                                             for kind in ("sim", "wf") for c in (0, 1)]
    stack = np.load(tiny_demo / "Image071" / "wf_channel1.npy")
    assert stack.shape == (4, 32, 32) and stack.dtype == np.uint16
    assert detect_layout(tiny_demo) == "raw"
    marker = json.loads((tiny_demo / "synthetic.json").read_text())
    assert marker["seed"] == 5 and marker["fovs"] == [1, 2, 71]


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_demo, tmp_path):
    again = ensure_synthetic_w2s(tmp_path / "again", TINY)
    assert file_bytes(again) == file_bytes(tiny_demo)
    other = ensure_synthetic_w2s(tmp_path / "other", SyntheticSpec(fovs=(1,), channels=1, frames=4, size=32, seed=6))
    assert file_bytes(other)["Image001/wf_channel0.npy"] != file_bytes(tiny_demo)["Image001/wf_channel0.npy"]


def test_noisy_frames_differ_from_the_clean_average(tiny_demo, tmp_path):
    _, sources = discover_pairs(tiny_demo, "auto", "avg1", cache_dir=str(tmp_path / "cache"))
    assert [s.name for s in sources] == ["001_0", "001_1", "002_0", "002_1", "071_0", "071_1"]
    for pair in load_pairs(sources):
        noise = pair.noisy - pair.clean
        assert np.abs(noise).mean() > 1.0  # counts, not a rounding difference
        assert pair.clean.std() > 2 * np.abs(noise).mean() / 4  # there is a scene under the noise
        correlation = np.corrcoef(pair.noisy.ravel(), pair.clean.ravel())[0, 1]
        assert 0.2 < correlation < 0.999
    stack = np.load(tiny_demo / "Image001" / "wf_channel0.npy")
    assert not np.array_equal(stack[0], stack[1])  # every frame is a new exposure


def test_an_existing_identical_dataset_is_not_rewritten(tiny_demo, monkeypatch):
    from training.data import synthetic

    before = {p: p.stat().st_mtime_ns for p in tiny_demo.rglob("*")}
    monkeypatch.setattr(synthetic, "save_npy", lambda *a: pytest.fail("rewrote an identical dataset"))
    assert ensure_synthetic_w2s(tiny_demo, TINY) == tiny_demo
    assert {p: p.stat().st_mtime_ns for p in tiny_demo.rglob("*")} == before


def test_a_different_spec_rewrites(tmp_path):
    root = ensure_synthetic_w2s(tmp_path / "d", SyntheticSpec(fovs=(1,), channels=1, frames=2, size=16, seed=0))
    first = np.load(root / "Image001" / "wf_channel0.npy")
    ensure_synthetic_w2s(root, SyntheticSpec(fovs=(1,), channels=1, frames=3, size=16, seed=0))
    assert np.load(root / "Image001" / "wf_channel0.npy").shape == (3, 16, 16) != first.shape


def test_sim_targets_are_sharper_2x_renderings_of_the_widefield_scene(tiny_demo, tmp_path):
    """--task jdsr's demo target: twice the size, aligned with the widefield average, with more fine detail."""
    _, sources = discover_pairs(tiny_demo, "auto", "avg1", cache_dir=str(tmp_path / "cache"), sim=True)
    _, plain = discover_pairs(tiny_demo, "auto", "avg1", cache_dir=str(tmp_path / "cache"))
    for pair, average in zip(load_pairs(sources, scale=2), load_pairs(plain)):
        sim = np.asarray(pair.clean, np.float64)
        assert sim.shape == (64, 64) and pair.clean.dtype == np.float32
        binned = sim.reshape(32, 2, 32, 2).mean(axis=(1, 3))
        assert np.corrcoef(binned.ravel(), np.asarray(average.clean).ravel())[0, 1] > 0.9
        shifted = np.corrcoef(binned[:, 3:].ravel(), np.asarray(average.clean)[:, :-3].ravel())[0, 1]
        assert shifted < 0.9  # the alignment above is not just smoothness
    spec = SyntheticSpec(size=64)
    structures = scene_structures(np.random.default_rng(0), spec)
    for structure in structures[1:]:  # filaments, vesicles (nuclei are smooth blobs either way)
        sim = sim_image(structure, spec).astype(np.float64)  # more detail than the noise-free widefield at 2x
        assert _detail(sim) > 1.15 * _detail(upsample(blur(structure, spec.psf_sigma)))


def _detail(image):
    """Mean absolute neighbour difference relative to the contrast: higher for a sharper image."""
    return np.abs(np.diff(image, axis=1)).mean() / (image.max() - image.min() + 1e-12)
