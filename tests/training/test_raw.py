"""training.data.raw: noise levels built from (T, Y, X) frame stacks as W2S defines them, cached once."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from training.data import raw
from training.data.layouts import discover_pairs, load_pairs
from training.data.raw import build_averages, resolve_cache_dir
from training.errors import UserError


def cached_levels(cache, fov=1, channel=0):
    return {level: np.load(cache / f"Image{fov:03d}_c{channel}_{level}.npy")
            for level in ("avg1", "avg2", "avg4", "avg8", "avg16", "avg400")}


@pytest.mark.parametrize("frames", [1, 5, 260], ids=["T=1", "T=5", "T=260"])
def test_levels_follow_the_w2s_definition(tmp_path, make_raw, frames):
    """avg1 = frame min(249, T-1); avgN = mean of frames 0..min(N,T)-1; avg400 = mean of all frames."""
    stacks = make_raw(tmp_path / "raw", fovs=(1,), frames=frames, shape=(6, 5))
    stack = stacks[1, 0].astype(np.float64)
    cache = tmp_path / "cache"
    build_averages(tmp_path / "raw" / "Image001" / "wf_channel0.npy", cache, 1, 0)
    levels = cached_levels(cache)
    np.testing.assert_array_equal(levels["avg1"], stack[min(249, frames - 1)].astype(np.float32))
    for n in (2, 4, 8, 16):
        np.testing.assert_allclose(levels[f"avg{n}"], stack[:n].mean(axis=0), rtol=1e-6, err_msg=f"avg{n}")
    np.testing.assert_allclose(levels["avg400"], stack.mean(axis=0), rtol=1e-6)
    assert all(a.dtype == np.float32 and a.shape == (6, 5) for a in levels.values())
    marker = json.loads((cache / "Image001_c0.json").read_text())
    assert marker["source"] == "wf_channel0.npy"


def test_avg1_is_frame_249_of_a_full_length_stack(tmp_path):
    """Distinct frames, so picking any frame but 249 (e.g. 250 or the first) would fail."""
    stack = np.arange(400, dtype=np.uint16)[:, None, None] * np.ones((1, 2, 3), np.uint16)
    (tmp_path / "Image005").mkdir()
    np.save(tmp_path / "Image005" / "wf_channel2.npy", stack)
    _, pairs = discover_pairs(tmp_path, "raw", "avg1", cache_dir=str(tmp_path / "c"))
    (pair,) = load_pairs(pairs)
    assert pair.name == "005_2"
    assert np.all(pair.noisy == 249)
    assert np.allclose(pair.clean, 199.5)
    (pair16,) = load_pairs(discover_pairs(tmp_path, "raw", "avg16", cache_dir=str(tmp_path / "c"))[1])
    assert np.allclose(pair16.noisy, 7.5)


def test_cache_is_built_once_and_reused(tmp_path, make_raw, monkeypatch):
    make_raw(tmp_path / "raw", fovs=(1, 2), channels=2, frames=4)
    cache = tmp_path / "cache"
    calls = []
    real_build = raw.build_averages
    monkeypatch.setattr(raw, "build_averages", lambda *a: (calls.append(a[2:]), real_build(*a)))
    first = discover_pairs(tmp_path / "raw", "raw", "avg1", cache_dir=str(cache))
    assert sorted(calls) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    markers = {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert len(markers) == 4

    calls.clear()
    second = discover_pairs(tmp_path / "raw", "raw", "avg4", cache_dir=str(cache))
    assert calls == []  # another noise level, same cache: nothing rebuilt
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.json")} == markers
    assert [p.target_path for p in first[1]] == [p.target_path for p in second[1]]


def test_cache_is_rebuilt_when_a_stack_changes(tmp_path, make_raw, monkeypatch):
    make_raw(tmp_path / "raw", fovs=(1, 2), frames=4)
    cache = tmp_path / "cache"
    discover_pairs(tmp_path / "raw", "raw", "avg1", cache_dir=str(cache))

    changed = tmp_path / "raw" / "Image002" / "wf_channel0.npy"
    new_stack = np.full((4, 16, 16), 1234, np.uint16)
    new_stack[2] = 7
    np.save(changed, new_stack)
    stat = changed.stat()  # same size as before: only the modification time tells them apart
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    calls = []
    real_build = raw.build_averages
    monkeypatch.setattr(raw, "build_averages", lambda *a: (calls.append(a[2:]), real_build(*a)))
    pairs = discover_pairs(tmp_path / "raw", "raw", "avg4", cache_dir=str(cache))[1]
    assert calls == [(2, 0)]
    pair = load_pairs([p for p in pairs if p.fov == 2])[0]
    np.testing.assert_allclose(pair.noisy, (3 * 1234 + 7) / 4)
    np.testing.assert_allclose(pair.clean, (3 * 1234 + 7) / 4)


def test_interrupted_build_is_redone(tmp_path, make_raw, monkeypatch):
    """The marker is written last: without it the averages are recomputed, never half-used."""
    make_raw(tmp_path / "raw", fovs=(1,), frames=3)
    cache = tmp_path / "cache"
    discover_pairs(tmp_path / "raw", "raw", "avg1", cache_dir=str(cache))
    (cache / "Image001_c0.json").unlink()
    calls = []
    monkeypatch.setattr(raw, "build_averages", lambda *a: calls.append(a[2:]))
    discover_pairs(tmp_path / "raw", "raw", "avg1", cache_dir=str(cache))
    assert calls == [(1, 0)]


def test_default_cache_lives_next_to_the_data(tmp_path, make_raw):
    make_raw(tmp_path / "raw", fovs=(1,), frames=2)
    _, pairs = discover_pairs(tmp_path / "raw", "raw", "avg1")
    assert pairs[0].input_path == tmp_path / "raw" / ".w2s-cache" / "Image001_c0_avg1.npy"
    assert resolve_cache_dir(tmp_path / "raw", str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"
    assert (tmp_path / "elsewhere").is_dir()


def test_read_only_data_caches_under_xdg_cache_home(tmp_path, make_raw, monkeypatch):
    make_raw(tmp_path / "raw", fovs=(1,), frames=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(raw.os, "access", lambda path, mode: False)  # chmod does not stop root: pretend
    path = resolve_cache_dir(tmp_path / "raw")
    assert path.parent == tmp_path / "xdg" / "w2s"
    assert path.name.startswith("raw-") and path.is_dir()
    (tmp_path / "raw2").mkdir()
    assert resolve_cache_dir(tmp_path / "raw2") != path  # one cache per dataset root


def test_non_stack_files_are_user_errors(tmp_path):
    cache = tmp_path / "cache"
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 4), np.uint16))
    with pytest.raises(UserError, match=r"flat\.npy: expected a \(frames, Y, X\) stack, got shape \(4, 4\)"):
        build_averages(flat, cache, 1, 0)
    text = tmp_path / "text.npy"
    text.write_text("not numpy")
    with pytest.raises(UserError, match=r"text\.npy: cannot read stack"):
        build_averages(text, cache, 1, 0)


def test_nan_in_a_float_stack_is_refused_and_nothing_is_cached(tmp_path):
    stack = np.ones((3, 4, 4), np.float32)
    stack[1, 2, 2] = np.nan
    (tmp_path / "raw" / "Image001").mkdir(parents=True)
    np.save(tmp_path / "raw" / "Image001" / "wf_channel0.npy", stack)
    with pytest.raises(UserError, match=r"wf_channel0\.npy: contains 1 NaN/Inf"):
        discover_pairs(tmp_path / "raw", "raw", "avg1", cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_non_matching_files_are_ignored(tmp_path, make_raw):
    make_raw(tmp_path / "raw", fovs=(3,), frames=2)
    np.save(tmp_path / "raw" / "Image003" / "sim_channel0.npy", np.zeros((8, 8), np.uint16))
    (tmp_path / "raw" / "Images").mkdir()
    _, pairs = discover_pairs(tmp_path / "raw", "auto", "avg1", cache_dir=str(tmp_path / "cache"))
    assert [p.name for p in pairs] == ["003_0"]
