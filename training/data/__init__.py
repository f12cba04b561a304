"""Data stage: find image pairs in any W2S layout, split them by field of view, normalize, sample patches."""

from training.data.layouts import ImagePair, PairSource, discover_pairs, load_pairs
from training.data.split import Split, split_by_fov

__all__ = ["ImagePair", "PairSource", "Split", "discover_pairs", "load_pairs", "split_by_fov"]
