"""Split pairs by field of view, never by image: the channels of one FOV image the same cells."""

from __future__ import annotations

from dataclasses import dataclass, field

from training.config import parse_fovs
from training.data.layouts import PairSource


@dataclass
class Split:
    train: list[PairSource] = field(default_factory=list)
    val: list[PairSource] = field(default_factory=list)
    test: list[PairSource] = field(default_factory=list)

    def groups(self, name: str) -> set[str]:
        return {p.group for p in getattr(self, name)}

    def summary(self) -> str:
        return ", ".join(f"{n}: {len(getattr(self, n))} images / {len(self.groups(n))} groups" for n in ("train", "val", "test"))


def split_by_fov(sources: list[PairSource], val_fovs: str, test_fovs: str) -> Split:
    """W2S pairs go to test if their FOV is in `test_fovs`, to val if in `val_fovs`, else to train.

    Pairs without a FOV number (the generic paired layout) are split by file: every fifth file (sorted by
    name, at least one when there are two or more) is validation; there is no test split.
    """
    split = Split()
    val, test = parse_fovs(val_fovs), parse_fovs(test_fovs)
    groups_without_fov = sorted({p.group for p in sources if p.fov is None})
    val_groups = set(groups_without_fov[4::5]) or ({groups_without_fov[-1]} if len(groups_without_fov) > 1 else set())
    for src in sources:
        if src.fov is None:
            (split.val if src.group in val_groups else split.train).append(src)
        elif src.fov in test:
            split.test.append(src)
        elif src.fov in val:
            split.val.append(src)
        else:
            split.train.append(src)
    return split
