"""training.data.layouts: each on-disk layout is detected, listed as pairs, and loaded as 2-D arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from training.data.layouts import detect_layout, discover_pairs, fingerprint, load_pairs
from training.errors import UserError


def names(pairs):
    return [p.name for p in pairs]


# ------------------------------------------------------------------------------------------------------- 8bit


@pytest.mark.parametrize("under_data", [False, True], ids=["ROOT/train", "ROOT/data/train"])
def test_8bit_layout_is_detected_and_paired_by_name(tmp_path, make_8bit, under_data):
    root = make_8bit(tmp_path / "w2s", fovs={"train": (1, 71), "test": (81,)}, channels=2, under_data=under_data)
    base = root / "data" if under_data else root
    assert detect_layout(root) == "8bit"
    layout, pairs = discover_pairs(root, "auto", "avg1")
    assert layout == "8bit"
    assert names(pairs) == ["001_0", "001_1", "071_0", "071_1", "081_0", "081_1"]
    by_name = {p.name: p for p in pairs}
    assert by_name["081_1"].input_path == base / "test" / "avg1" / "081_1.png"
    assert by_name["081_1"].target_path == base / "test" / "avg400" / "081_1.png"
    assert (by_name["071_0"].fov, by_name["071_0"].group) == (71, "071")

    loaded = load_pairs(pairs)
    from PIL import Image

    expected_noisy = np.asarray(Image.open(base / "train" / "avg1" / "071_1.png"))
    expected_clean = np.asarray(Image.open(base / "train" / "avg400" / "071_1.png"))
    pair = next(p for p in loaded if p.name == "071_1")
    assert pair.noisy.shape == pair.clean.shape == (32, 32)
    np.testing.assert_array_equal(pair.noisy, expected_noisy)
    np.testing.assert_array_equal(pair.clean, expected_clean)


def test_8bit_noise_level_selects_the_input_folder(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 2)}, levels=("avg1", "avg4"))
    _, pairs = discover_pairs(root, "auto", "avg4")
    assert {p.input_path.parent.name for p in pairs} == {"avg4"}
    assert {p.target_path.parent.name for p in pairs} == {"avg400"}
    with pytest.raises(UserError, match="no image pairs found.*avg16"):
        discover_pairs(root, "auto", "avg16")


def test_8bit_rgb_png_is_read_as_grayscale(tmp_path, make_8bit):
    from PIL import Image

    root = make_8bit(tmp_path, fovs={"train": (1,)}, channels=1)
    gray = np.asarray(Image.open(root / "train" / "avg1" / "001_0.png"))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(root / "train" / "avg1" / "001_0.png")
    (pair,) = load_pairs(discover_pairs(root, "auto", "avg1")[1])
    np.testing.assert_array_equal(pair.noisy, gray)


def test_8bit_input_without_target_names_the_missing_file(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 2)}, channels=1)
    (root / "train" / "avg400" / "002_0.png").unlink()
    with pytest.raises(UserError, match=r"002_0\.png: no matching target .*avg400.002_0\.png"):
        discover_pairs(root, "auto", "avg1")


# ------------------------------------------------------------------------------------------------- normalized


@pytest.mark.parametrize("nested", [True, False], ids=["ROOT/normalized/avgN", "ROOT/avgN"])
def test_normalized_layout_is_detected_and_loaded(tmp_path, make_normalized, nested):
    root = make_normalized(tmp_path / "norm", fovs=(1, 71), channels=2, nested=nested)
    base = root / "normalized" if nested else root
    assert detect_layout(root) == "normalized"
    layout, pairs = discover_pairs(root, "auto", "avg1")
    assert layout == "normalized"
    assert names(pairs) == ["001_0", "001_1", "071_0", "071_1"]
    loaded = load_pairs(pairs)
    np.testing.assert_array_equal(loaded[3].noisy, np.load(base / "avg1" / "071_1.npy"))
    np.testing.assert_array_equal(loaded[3].clean, np.load(base / "avg400" / "071_1.npy"))
    assert loaded[0].noisy.dtype == np.float32


def test_normalized_ignores_files_that_are_not_w2s_names(tmp_path, make_normalized):
    root = make_normalized(tmp_path, fovs=(1,), channels=1)
    np.save(root / "normalized" / "avg1" / "notes.npy", np.zeros((4, 4), np.float32))
    assert names(discover_pairs(root, "auto", "avg1")[1]) == ["001_0"]


# -------------------------------------------------------------------------------------------------------- raw


def test_raw_layout_is_detected_and_pairs_point_into_the_cache(tmp_path, make_raw):
    stacks = make_raw(tmp_path / "raw", fovs=(1, 71), channels=2, frames=3)
    assert detect_layout(tmp_path / "raw") == "raw"
    layout, pairs = discover_pairs(tmp_path / "raw", "auto", "avg2", cache_dir=str(tmp_path / "cache"))
    assert layout == "raw"
    assert names(pairs) == ["001_0", "001_1", "071_0", "071_1"]
    assert all(p.input_path.parent == tmp_path / "cache" for p in pairs)
    pair = load_pairs(pairs)[2]
    np.testing.assert_allclose(pair.noisy, stacks[71, 0][:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pair.clean, stacks[71, 0].mean(axis=0), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------- paired


def test_paired_layout_splits_3d_and_4d_stacks_into_slices(tmp_path, make_paired):
    arrays = make_paired(tmp_path, {"cellA": (24, 20), "stack3": (3, 24, 20), "stack4": (2, 3, 16, 18)})
    assert detect_layout(tmp_path) == "paired"
    layout, pairs = discover_pairs(tmp_path, "auto", "avg1")
    assert layout == "paired"
    assert names(pairs) == ["cellA", *[f"stack3[{i}]" for i in range(3)], *[f"stack4[{i}]" for i in range(6)]]
    assert {p.group for p in pairs} == {"cellA", "stack3", "stack4"}
    assert all(p.fov is None for p in pairs)

    loaded = {p.name: p for p in load_pairs(pairs)}
    np.testing.assert_array_equal(loaded["cellA"].noisy, arrays["cellA"][0])
    np.testing.assert_array_equal(loaded["stack3[2]"].noisy, arrays["stack3"][0][2])
    np.testing.assert_array_equal(loaded["stack3[2]"].clean, arrays["stack3"][1][2])
    # 4-D: the leading axes are flattened in C order, (t=1, z=2) -> slice 1*3 + 2 = 5
    np.testing.assert_array_equal(loaded["stack4[5]"].noisy, arrays["stack4"][0][1, 2])
    np.testing.assert_array_equal(loaded["stack4[5]"].clean, arrays["stack4"][1][1, 2])
    assert all(p.noisy.ndim == 2 for p in loaded.values())


def test_paired_accepts_tiff_suffix_and_integer_pixels(tmp_path, make_paired):
    make_paired(tmp_path, {"a": (16, 16)}, dtype=np.uint16, suffix=".tiff")
    (pair,) = load_pairs(discover_pairs(tmp_path, "auto", "avg1")[1])
    assert pair.noisy.dtype == np.uint16


def test_paired_unmatched_names_are_reported(tmp_path, make_paired):
    make_paired(tmp_path, {"a": (16, 16), "b": (16, 16)})
    (tmp_path / "targets" / "b.tif").rename(tmp_path / "targets" / "c.tif")
    with pytest.raises(UserError, match=r"b\.tif: no file named 'b' in .*targets"):
        discover_pairs(tmp_path, "auto", "avg1")


def test_paired_shape_mismatch_is_reported(tmp_path, make_paired):
    make_paired(tmp_path, {"a": (16, 16)})
    tifffile.imwrite(tmp_path / "targets" / "a.tif", np.zeros((16, 17), np.float32))
    with pytest.raises(UserError, match=r"a\.tif: shape \(16, 16\) does not match target .*\(16, 17\)"):
        discover_pairs(tmp_path, "auto", "avg1")


# ----------------------------------------------------------------------------------------- detection / forcing


def test_detect_layout_errors(tmp_path):
    with pytest.raises(UserError, match="missing: data directory not found"):
        detect_layout(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: data directory is empty"):
        detect_layout(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="other: unknown data layout"):
        detect_layout(tmp_path / "other")


def test_layout_can_be_forced(tmp_path, make_8bit, make_paired):
    """A folder holding two layouts: auto picks paired (checked first); --layout 8bit picks the PNGs."""
    make_8bit(tmp_path, fovs={"train": (1, 2)}, channels=1)
    make_paired(tmp_path, {"x": (16, 16)})
    assert discover_pairs(tmp_path, "auto", "avg1")[0] == "paired"
    layout, pairs = discover_pairs(tmp_path, "8bit", "avg1")
    assert layout == "8bit"
    assert names(pairs) == ["001_0", "002_0"]
    layout, pairs = discover_pairs(tmp_path, "paired", "avg1")
    assert (layout, names(pairs)) == ("paired", ["x"])


def test_forcing_a_layout_that_is_not_there_is_a_user_error(tmp_path, make_8bit):
    make_8bit(tmp_path, fovs={"train": (1,)}, channels=1)
    with pytest.raises(UserError, match="no image pairs found for layout 'normalized'"):
        discover_pairs(tmp_path, "normalized", "avg1")
    with pytest.raises(UserError, match="no ImageFFF/wf_channelC.npy stacks found"):
        discover_pairs(tmp_path, "raw", "avg1", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="unknown layout 'tiff'"):
        discover_pairs(tmp_path, "tiff", "avg1")
    with pytest.raises(UserError, match="data directory not found"):
        discover_pairs(tmp_path / "nope", "8bit", "avg1")


def test_forcing_paired_on_a_folder_without_inputs_is_a_user_error(tmp_path, make_8bit):
    make_8bit(tmp_path, fovs={"train": (1,)}, channels=1)
    with pytest.raises(UserError, match="inputs"):
        discover_pairs(tmp_path, "paired", "avg1")


# ---------------------------------------------------------------------------------------------------- loading


def test_load_pairs_refuses_nan_unless_unchecked(tmp_path, make_normalized):
    root = make_normalized(tmp_path, fovs=(1,), channels=1)
    bad = np.load(root / "normalized" / "avg1" / "001_0.npy")
    bad[3, 4] = np.nan
    bad[5, 6] = np.inf
    np.save(root / "normalized" / "avg1" / "001_0.npy", bad)
    sources = discover_pairs(root, "auto", "avg1")[1]
    with pytest.raises(UserError, match=r"avg1.001_0\.npy: contains 2 NaN/Inf value\(s\)"):
        load_pairs(sources)
    (pair,) = load_pairs(sources, check=False)
    assert np.isnan(pair.noisy[3, 4])


def test_load_pairs_refuses_shape_mismatch(tmp_path, make_normalized):
    root = make_normalized(tmp_path, fovs=(1,), channels=1)
    np.save(root / "normalized" / "avg400" / "001_0.npy", np.zeros((32, 31), np.float32))
    with pytest.raises(UserError, match=r"001_0\.npy: shape \(32, 32\) does not match target .*\(32, 31\)"):
        load_pairs(discover_pairs(root, "auto", "avg1")[1])


@pytest.mark.parametrize("content", [b"", b"this is not a numpy file\n", b"\x93NUMPY\x01\x00garbage"],
                         ids=["empty", "text", "truncated-header"])
def test_unreadable_npy_is_a_user_error_naming_the_file(tmp_path, make_normalized, content):
    root = make_normalized(tmp_path, fovs=(1,), channels=1)
    (root / "normalized" / "avg1" / "001_0.npy").write_bytes(content)
    with pytest.raises(UserError, match=r"avg1.001_0\.npy: "):
        load_pairs(discover_pairs(root, "auto", "avg1")[1])


def test_truncated_png_is_a_user_error_naming_the_file(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1,)}, channels=1)
    path = root / "train" / "avg400" / "001_0.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(UserError, match=r"avg400.001_0\.png: cannot read image"):
        load_pairs(discover_pairs(root, "auto", "avg1")[1])


def test_3d_npy_in_a_w2s_layout_is_refused(tmp_path, make_normalized):
    root = make_normalized(tmp_path, fovs=(1,), channels=1)
    np.save(root / "normalized" / "avg1" / "001_0.npy", np.zeros((2, 32, 32), np.float32))
    with pytest.raises(UserError, match=r"expected a 2-D image, got shape \(2, 32, 32\)"):
        load_pairs(discover_pairs(root, "auto", "avg1")[1])


def test_fingerprint_tracks_file_changes(tmp_path, make_normalized):
    root = make_normalized(tmp_path, fovs=(1, 2), channels=1)
    sources = discover_pairs(root, "auto", "avg1")[1]
    before = fingerprint(sources)
    assert before == fingerprint(discover_pairs(root, "auto", "avg1")[1])
    assert len(before) == 16
    path = root / "normalized" / "avg1" / "002_0.npy"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(sources) != before
