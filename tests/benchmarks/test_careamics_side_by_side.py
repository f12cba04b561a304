"""The CAREamics comparison's project side: it reads the harness's own split and needs no CAREamics to load."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from benchmarks.careamics_side_by_side import main, per_image, split_arrays
from conftest import write_8bit
from training.io import read_image


def test_split_arrays_are_the_harness_split_with_names_aligned(tmp_path):
    data = write_8bit(tmp_path / "data")  # train FOVs 1, 2, 3 and 71 (2 channels each); test FOV 81
    layout, arrays = split_arrays(data, "071")
    assert layout == "8bit"
    noisy, clean, names = arrays["val"]
    assert names == ["071_0", "071_1"]
    assert noisy.shape == clean.shape == (2, 32, 32) and noisy.dtype == np.float32
    np.testing.assert_array_equal(clean[1], read_image(data / "train" / "avg400" / "071_1.png"))
    np.testing.assert_array_equal(noisy[0], read_image(data / "train" / "avg1" / "071_0.png"))
    train_noisy, _, train_names = arrays["train"]
    assert len(train_names) == len(train_noisy) == 6 and not any(n.startswith(("071", "081")) for n in train_names)


def test_help_runs_without_careamics_installed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "CAREamics" in capsys.readouterr().out
    assert "careamics" not in sys.modules and "lightning" not in sys.modules


def test_per_image_splits_careamics_stacks_in_order_and_refuses_a_wrong_count():
    stack = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 1, 4, 5)  # one SYX input comes back as (S, 1, Y, X)
    images = per_image([stack, stack[0, 0]], 4)
    assert [image.shape for image in images] == [(4, 5)] * 4 and images[0].dtype == np.float32
    np.testing.assert_array_equal(images[2], stack[2, 0])
    np.testing.assert_array_equal(images[3], stack[0, 0])
    with pytest.raises(RuntimeError, match="returned 4 images for 30 inputs"):
        per_image([stack, stack[0, 0]], 30)


def test_missing_data_is_a_one_line_error_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["--data", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_without_careamics_it_says_where_to_run_it(tmp_path, capsys):
    if importlib.util.find_spec("careamics") is not None:
        pytest.skip("CAREamics is installed here")
    data = write_8bit(tmp_path / "data")
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "careamics is not installed" in err and "make bench-careamics" in err and err.count("\n") == 1
