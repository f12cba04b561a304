"""The embedded demo dataset: synthetic fluorescence images written in W2S's raw layout.

Each field of view holds a few cells; channel 0 shows nuclei, channel 1 actin-like filaments and channel 2
vesicles, blurred by a Gaussian PSF and imaged frame by frame with Poisson shot noise, camera gain, offset
and Gaussian read noise at W2S-like counts (about 100..400). Deterministic from the seed, so every fresh
clone trains on the same pixels through exactly the code path real raw data takes.

For `--task jdsr` each channel also has a noise-free "SIM" image, `sim_channel{c}.npy`, of twice the size: the
same structures rendered at 2x sampling with a PSF half as wide (SIM's ~2x resolution), in other units
than the widefield counts, as in W2S.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, zoom
from tqdm import tqdm

from training.io import save_npy, write_text

GENERATOR_VERSION = 2  # 2: SIM targets (widefield pixels unchanged)


@dataclass(frozen=True)
class SyntheticSpec:
    fovs: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 71, 72, 81, 82)  # train | val (071-080) | test (081-120)
    channels: int = 3
    frames: int = 24
    size: int = 256
    peak_photons: float = 25.0
    background_photons: float = 2.0
    gain: float = 6.0
    offset: float = 100.0
    read_noise: float = 4.0
    psf_sigma: float = 1.3
    sim_peak: float = 1000.0  # SIM image = sim_offset + sim_peak * structure (noise-free)
    sim_offset: float = 50.0
    seed: int = 0


def ensure_synthetic_w2s(root: str | Path, spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Path:
    """Write the dataset to `root` unless an identical one is already there; returns `root`."""
    root = Path(root)
    marker = root / "synthetic.json"
    wanted = {"generator": GENERATOR_VERSION, **asdict(spec)}
    wanted["fovs"] = list(spec.fovs)
    try:
        if json.loads(marker.read_text()) == wanted:
            return root
    except (OSError, ValueError):
        pass
    for fov in tqdm(spec.fovs, desc="writing synthetic W2S demo data", unit="FOV", disable=not progress):
        rng = np.random.default_rng([spec.seed, fov])
        structures = scene_structures(rng, spec)
        clean = [blur(image, spec.psf_sigma) for image in structures]
        sim = [sim_image(image, spec) for image in structures]
        for channel in range(spec.channels):
            stack = image_stack(rng, clean[channel % len(clean)], spec)
            save_npy(root / f"Image{fov:03d}" / f"wf_channel{channel}.npy", stack)
            save_npy(root / f"Image{fov:03d}" / f"sim_channel{channel}.npy", sim[channel % len(sim)])
    write_text(marker, json.dumps(wanted, indent=1))
    return root


def fluorescence_scene(rng: np.random.Generator, spec: SyntheticSpec) -> list[np.ndarray]:
    """Noise-free widefield images in [0, 1] of the same cells in three stains: nuclei, filaments, vesicles."""
    return [blur(image, spec.psf_sigma) for image in scene_structures(rng, spec)]


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """An image seen through a Gaussian PSF, scaled to a peak of 1."""
    return np.clip(gaussian_filter(image, sigma), 0, None) / max(float(image.max()), 1e-6)


def sim_image(structure: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """The 2x SIM rendering of one stain: sampled twice as finely (linear interpolation of the structure) and
    blurred by a PSF half as wide as the widefield one (`psf_sigma` pixels of the 2x grid), float32."""
    fine = zoom(structure, 2, order=1, grid_mode=True, mode="grid-constant")
    image = blur(fine, spec.psf_sigma)
    return (spec.sim_offset + spec.sim_peak * image / max(float(image.max()), 1e-6)).astype(np.float32)


def scene_structures(rng: np.random.Generator, spec: SyntheticSpec) -> list[np.ndarray]:
    """The three stains before any PSF: nuclei, filaments, vesicles (arbitrary units)."""
    size = spec.size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centers = rng.uniform(0.15 * size, 0.85 * size, size=(int(rng.integers(3, 6)), 2))

    nuclei = np.zeros((size, size), np.float32)
    for cy, cx in centers:
        ry, rx = rng.uniform(0.06, 0.11, 2) * size
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        nuclei = np.maximum(nuclei, np.clip(1.5 * (1 - (u**2 + v**2)), 0, 1) * rng.uniform(0.6, 1.0))
    texture = gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), 3)
    nuclei *= 1 + 0.6 * texture / (np.abs(texture).max() + 1e-6)

    filaments = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(25, 40))):
        pos = centers[rng.integers(len(centers))] + rng.normal(0, 0.12 * size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        brightness = rng.uniform(0.4, 1.0)
        for _ in range(int(rng.integers(60, 200))):
            heading += rng.normal(0, 0.08)
            pos = pos + (np.sin(heading), np.cos(heading))
            iy, ix = int(pos[0]), int(pos[1])
            if 0 <= iy < size and 0 <= ix < size:
                filaments[iy, ix] = max(filaments[iy, ix], brightness)
    filaments = gaussian_filter(filaments, 0.7) * 4

    vesicles = np.zeros((size, size), np.float32)
    count = int(rng.integers(150, 300))
    spots = centers[rng.integers(len(centers), size=count)] + rng.normal(0, 0.15 * size, (count, 2))
    for (sy, sx), radius, brightness in zip(spots, rng.uniform(0.8, 2.5, count), rng.uniform(0.3, 1.0, count)):
        y0, y1 = int(max(sy - 8, 0)), int(min(sy + 9, size))
        x0, x1 = int(max(sx - 8, 0)), int(min(sx + 9, size))
        if y0 < y1 and x0 < x1:
            blob = np.exp(-((yy[y0:y1, x0:x1] - sy) ** 2 + (xx[y0:y1, x0:x1] - sx) ** 2) / (2 * radius**2))
            vesicles[y0:y1, x0:x1] = np.maximum(vesicles[y0:y1, x0:x1], brightness * blob)

    return [nuclei, filaments, vesicles]


def image_stack(rng: np.random.Generator, clean: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    """`frames` independent exposures of one scene: gain * Poisson(photons) + offset + read noise, uint16."""
    photons = spec.background_photons + spec.peak_photons * clean / max(float(clean.max()), 1e-6)
    counts = spec.gain * rng.poisson(photons, size=(spec.frames, *clean.shape)).astype(np.float32)
    counts += spec.offset + rng.normal(0, spec.read_noise, size=counts.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
