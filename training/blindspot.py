"""Noise2Void (Krull et al. 2019): self-supervised training from noisy images alone.

A few pixels of each patch are replaced by the value of a random other pixel within `radius` (N2V's
"uniform with the centre excluded" scheme) and the loss is computed on those pixels only, against their
original noisy values. As the input no longer holds a masked pixel's own value, the network cannot learn
the identity there; with pixel-independent noise, the best it can do is predict the clean signal.
"""

from __future__ import annotations

import numpy as np
import torch

from training.config import TrainConfig
from training.data.layouts import ImagePair
from training.data.normalization import Normalization
from training.data.sampler import PatchSampler
from training.metrics import psnr, scale_invariant_psnr, ssim

REDRAWS = 10  # tries to find a neighbour that is not itself masked before a pixel is left unmasked
VAL_SEED = 12345  # the validation masks are the same every epoch, so val_loss compares across epochs


def blind_spot(patches: np.ndarray, fraction: float, radius: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mask (batch, channels, Y, X) patches: returns (masked input, float mask with 1 at masked pixels).

    Each masked pixel takes the value of a pixel within `radius` that is neither itself nor another masked
    pixel, so no masked pixel's own value appears anywhere in the input (a pixel with no such neighbour
    after a few draws stays unmasked and out of the loss).
    """
    batch, channels, height, width = patches.shape
    count = max(1, int(round(fraction * height * width)))
    masked = patches.copy()
    mask = np.zeros(patches.shape, dtype=np.float32)
    for b in range(batch):
        for c in range(channels):
            flat = rng.choice(height * width, size=min(count, height * width), replace=False)
            ys, xs = np.divmod(flat, width)
            chosen = np.zeros((height, width), dtype=bool)
            chosen[ys, xs] = True
            src_y, src_x = np.empty_like(ys), np.empty_like(xs)
            pending = np.ones(len(ys), dtype=bool)
            for _ in range(REDRAWS):
                n = int(pending.sum())
                if not n:
                    break
                dy, dx = _offsets(n, radius, rng)
                sy = np.clip(ys[pending] + dy, 0, height - 1)
                sx = np.clip(xs[pending] + dx, 0, width - 1)
                ok = ~chosen[sy, sx]  # also rejects offsets clipped back onto the pixel itself
                idx = np.flatnonzero(pending)[ok]
                src_y[idx], src_x[idx] = sy[ok], sx[ok]
                pending[idx] = False
            keep = ~pending
            ys, xs = ys[keep], xs[keep]
            masked[b, c, ys, xs] = patches[b, c, src_y[keep], src_x[keep]]
            mask[b, c, ys, xs] = 1.0
    return masked, mask


def _offsets(n: int, radius: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` offsets uniform over the (2r+1)^2 - 1 positions around a pixel, never (0, 0)."""
    side = 2 * radius + 1
    index = rng.integers(side * side - 1, size=n)
    index = index + (index >= side * side // 2)  # skip the centre
    dy, dx = np.divmod(index, side)
    return dy - radius, dx - radius


class BlindSpotSampler:
    """Noisy patches (augmented as in supervised training), masked; the target packs (noisy, mask).

    Targets of paired layouts are never read: the patch sampler is given each noisy image as its own target.
    """

    def __init__(self, pairs: list[ImagePair], normalization: Normalization, config: TrainConfig,
                 rng: np.random.Generator):
        own = Normalization(**{**normalization.to_dict(), "target": "input"})
        self.patches = PatchSampler([ImagePair(p.source, p.noisy, p.noisy) for p in pairs], own, config.patch_size,
                                    config.batch_size, config.augment, rng)
        self.fraction, self.radius, self.rng = config.n2v_fraction, config.n2v_radius, rng

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        noisy, _ = self.patches.sample()
        masked, mask = blind_spot(noisy, self.fraction, self.radius, self.rng)
        return masked, np.concatenate([noisy, mask], axis=1)


class MaskedLoss(torch.nn.Module):
    """L1 or MSE over the masked pixels only; `packed` is (batch, 2, Y, X): original noisy values, mask."""

    def __init__(self, kind: str = "l1"):
        super().__init__()
        self.kind = kind

    def forward(self, prediction: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        target, mask = packed[:, :1], packed[:, 1:]
        error = (prediction - target).abs() if self.kind == "l1" else (prediction - target) ** 2
        return (error * mask).sum() / mask.sum().clamp(min=1.0)


@torch.no_grad()
def validate_n2v(model: torch.nn.Module, normalization: Normalization, pairs: list[ImagePair],
                 device: torch.device, config: TrainConfig) -> dict[str, float]:
    """val_loss: the blind-spot loss on whole noisy validation images (fixed masks), the only score that needs
    no clean data, so it is what selects the best epoch; PSNR/SI-PSNR/SSIM too where targets exist."""
    from training.predict import predict_image

    model.eval()
    rng = np.random.default_rng(VAL_SEED)
    loss_fn = MaskedLoss(config.loss)
    scores: dict[str, list[float]] = {"val_loss": []}
    for pair in pairs:
        noisy = normalization.normalize(pair.noisy)
        masked, mask = blind_spot(noisy[None, None], config.n2v_fraction, config.n2v_radius, rng)
        output = model(torch.from_numpy(masked).to(device)).float()
        packed = torch.from_numpy(np.concatenate([noisy[None, None], mask], axis=1)).to(device)
        scores["val_loss"].append(float(loss_fn(output, packed)))
        if pair.clean is None:
            continue
        prediction = predict_image(model, normalization, pair.noisy, device)
        clean = np.asarray(pair.clean, dtype=np.float32)
        for name, metric in (("val_psnr", psnr), ("val_si_psnr", scale_invariant_psnr), ("val_ssim", ssim)):
            scores.setdefault(name, []).append(metric(clean, prediction))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def selection_metric(select_metric: str, task: str, target_normalization: str) -> str:
    """The validation score that picks the best epoch. auto: the blind-spot loss for n2v, which must not use
    clean data; SI-PSNR where targets are not in the input's units (target normalization fit/own: the 8-bit
    release's per-image stretch, jdsr's SIM), since the output is scaled back to the input's units and plain
    PSNR there mostly measures that offset; else PSNR."""
    if select_metric != "auto":
        return f"val_{select_metric}"
    if task == "n2v":
        return "val_loss"
    return "val_si_psnr" if task == "jdsr" or target_normalization in ("fit", "own") else "val_psnr"


def improved(metric: str, val: dict[str, float], best: dict[str, float]) -> bool:
    """Whether this epoch's `metric` beats the best so far (lower for the loss, higher for image scores)."""
    if metric == "val_loss":
        return val[metric] < best.get(metric, np.inf)
    return val[metric] > best.get(metric, -np.inf)


def epoch_summary(task: str, val: dict[str, float], noisy: dict[str, float]) -> str:
    """The per-epoch console line's scores: whichever metrics this validation could compute (and, for n2v,
    the blind-spot loss that selects the best epoch)."""
    if "val_psnr" not in val:
        return f"val_loss {val['val_loss']:.4f} (no targets)"
    scores = (f"val_psnr {val['val_psnr']:.2f} dB  val_si_psnr {val['val_si_psnr']:.2f} dB  "
              f"val_ssim {val['val_ssim']:.4f}  (noisy {noisy['psnr']:.2f} dB)")
    return f"val_loss {val['val_loss']:.4f}  {scores}" if task == "n2v" else scores
