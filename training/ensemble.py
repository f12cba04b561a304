"""Test-time augmentation: average a model over the 8 flips and 90-degree turns of its input.

The network was trained on every dihedral transform of its patches (PatchSampler's augmentation), so each
transform gives an equally good but slightly different estimate; averaging the 8 cuts the variance of the
estimate (a free gain at 8x the inference cost). Wrapping the model keeps every prediction path (whole image,
tiles, stacks, the container) unchanged.
"""

from __future__ import annotations

import torch


class DihedralEnsemble(torch.nn.Module):
    """`model`'s output averaged over the dihedral group D4 of its input (output transformed back)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for flip in (False, True):
            flipped = torch.flip(x, dims=(-1,)) if flip else x
            for turns in range(4):
                y = self.model(torch.rot90(flipped, turns, dims=(-2, -1)))
                y = torch.rot90(y, -turns, dims=(-2, -1))
                y = torch.flip(y, dims=(-1,)) if flip else y
                total = y if total is None else total + y
        return total / 8


def with_tta(model: torch.nn.Module, tta: bool) -> torch.nn.Module:
    return DihedralEnsemble(model) if tta else model
