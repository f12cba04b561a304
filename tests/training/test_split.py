"""training.data.split: no field of view (group) ever lands in two splits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.config import TrainConfig
from training.data.layouts import PairSource, discover_pairs
from training.data.split import split_by_fov
from training.errors import UserError
from training.trainer import prepare_data


def assert_disjoint(split, sources):
    groups = {name: split.groups(name) for name in ("train", "val", "test")}
    for a, b in itertools.combinations(groups, 2):
        assert not groups[a] & groups[b], f"{a} and {b} share groups {groups[a] & groups[b]}"
    listed = split.train + split.val + split.test
    assert sorted(p.name for p in listed) == sorted(p.name for p in sources)  # every pair exactly once


def test_w2s_fovs_split_into_train_val_test(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 2, 3, 71), "test": (81,)}, channels=3)
    _, sources = discover_pairs(root, "auto", "avg1")
    split = split_by_fov(sources, "071-080", "081-120")
    assert split.groups("train") == {"001", "002", "003"}
    assert split.groups("val") == {"071"}
    assert split.groups("test") == {"081"}
    assert len(split.val) == 3  # all three channels of FOV 71 together
    assert_disjoint(split, sources)
    assert split.summary() == ("train: 9 images / 3 groups, val: 3 images / 1 groups, test: 3 images / 1 groups")


def test_validation_fovs_are_configurable(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 2, 3, 71), "test": (81,)}, channels=2)
    _, sources = discover_pairs(root, "auto", "avg1")
    split = split_by_fov(sources, "002,003", "081-120")
    assert split.groups("val") == {"002", "003"}
    assert split.groups("train") == {"001", "071"}
    assert_disjoint(split, sources)
    # a FOV named in both is test, never both
    split = split_by_fov(sources, "071-090", "081-120")
    assert split.groups("val") == {"071"} and split.groups("test") == {"081"}
    assert_disjoint(split, sources)


def test_random_w2s_splits_are_disjoint_and_complete():
    rng = np.random.default_rng(0)
    for _ in range(50):
        fovs = sorted(set(rng.integers(1, 121, size=rng.integers(1, 30)).tolist()))
        sources = [PairSource(f"{f:03d}_{c}", f"{f:03d}", f, None, None) for f in fovs for c in range(3)]
        lo = int(rng.integers(1, 100))
        split = split_by_fov(sources, f"{lo:03d}-{lo + 10:03d}", "081-120")
        assert_disjoint(split, sources)
        assert all(81 <= p.fov <= 120 for p in split.test)
        assert all(lo <= p.fov <= lo + 10 and not 81 <= p.fov <= 120 for p in split.val)


def test_paired_layout_splits_by_file_keeping_stack_slices_together(tmp_path, make_paired):
    shapes = {f"cell{i}": (2, 16, 16) if i % 2 else (16, 16) for i in range(11)}
    make_paired(tmp_path, shapes)
    _, sources = discover_pairs(tmp_path, "auto", "avg1")
    split = split_by_fov(sources, "071-080", "081-120")
    # every fifth file, sorted by name: cell0, cell1, cell10, cell2, [cell3], cell4, ..., cell7, [cell8], cell9
    assert split.groups("val") == {"cell3", "cell8"}
    assert split.val == [s for s in sources if s.group in ("cell3", "cell8")]
    assert len(split.val) == 2 + 1  # cell3 is a 2-slice stack: both slices in val
    assert split.test == []
    assert_disjoint(split, sources)


@pytest.mark.parametrize("count, expected_val", [(1, set()), (2, {"f1"}), (4, {"f3"}), (5, {"f4"})])
def test_paired_small_datasets(count, expected_val):
    sources = [PairSource(f"f{i}", f"f{i}", None, None, None) for i in range(count)]
    split = split_by_fov(sources, "071-080", "081-120")
    assert split.groups("val") == expected_val
    assert_disjoint(split, sources)


def test_prepare_data_refuses_empty_splits(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 2)}, channels=1)
    with pytest.raises(UserError, match="no validation images"):
        prepare_data(TrainConfig(data=str(root), val_fovs="071"))
    with pytest.raises(UserError, match="no training images left"):
        prepare_data(TrainConfig(data=str(root), val_fovs="001", test_fovs="002"))


def test_prepare_data_caps_validation_images(tmp_path, make_8bit):
    root = make_8bit(tmp_path, fovs={"train": (1, 71, 72)}, channels=2)
    data = prepare_data(TrainConfig(data=str(root), val_fovs="071-072", val_max_images=3))
    assert [p.name for p in data.val] == ["071_0", "071_1", "072_0"]
    assert [p.name for p in data.train] == ["001_0", "001_1"]
    assert data.layout == "8bit"
