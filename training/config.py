"""The one typed configuration that travels from the CLI into training and is saved in every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import UserError

NOISE_LEVELS = ("avg1", "avg2", "avg4", "avg8", "avg16")
LAYOUTS = ("auto", "8bit", "normalized", "raw", "paired", "noisy")
TASKS = ("denoise", "n2v", "jdsr")  # supervised noisy -> clean; Noise2Void (no targets); joint denoising + 2x SR
SELECT_METRICS = ("auto", "loss", "psnr", "si_psnr", "ssim")  # what picks the best epoch (training.blindspot)
SR_HEADS = ("none", "shuffle", "transpose")


@dataclass
class UNetConfig:
    """U-Net shape. Defaults chosen by measurement on W2S (see README, "Model")."""

    depth: int = 3
    base_channels: int = 32
    batch_norm: bool = False
    residual: bool = True
    upsample: str = "bilinear"  # "bilinear" (resize + conv) or "transpose" (transposed convolution)
    sr_head: str = "none"  # 2x output head for --task jdsr: "shuffle" (sub-pixel conv) or "transpose"; "none" = 1x
    in_channels: int = 1
    out_channels: int = 1

    @property
    def scale(self) -> int:
        """Output size over input size: 2 with a super-resolution head, else 1."""
        return 1 if self.sr_head == "none" else 2

    def validate(self) -> None:
        _check(1 <= self.depth <= 6, "model.depth", self.depth, "an integer from 1 to 6")
        _check(1 <= self.base_channels <= 256, "model.base_channels", self.base_channels, "from 1 to 256")
        _check(self.upsample in ("bilinear", "transpose"), "model.upsample", self.upsample, "'bilinear' or 'transpose'")
        _check(self.sr_head in SR_HEADS, "model.sr_head", self.sr_head, " | ".join(SR_HEADS))
        _check(self.in_channels == 1 and self.out_channels == 1, "model.in_channels/out_channels",
               (self.in_channels, self.out_channels), "1 (single-channel denoising)")


PRESETS: dict[str, dict[str, Any]] = {
    # The original student project's network: 64 filters, depth 4, batch norm, transposed convolutions.
    "seed": {"depth": 4, "base_channels": 64, "batch_norm": True, "residual": False, "upsample": "transpose"},
    "default": {},
}


@dataclass
class TrainConfig:
    """Everything that determines a training run; `asdict()` of it is logged to MLflow and checkpointed."""

    task: str = "denoise"
    n2v_fraction: float = 0.002  # n2v: share of each patch's pixels masked (N2V's 0.2%)
    n2v_radius: int = 2  # n2v: a masked pixel takes the value of a random other pixel within this radius
    # data
    data: str = ""  # dataset root; empty = the embedded synthetic demo dataset
    layout: str = "auto"
    noise_level: str = "avg1"
    val_fovs: str = "071-080"  # W2S FOVs held out of training for validation/model selection
    test_fovs: str = "081-120"  # W2S official test FOVs
    cache_dir: str = ""  # where averaged raw stacks are cached; empty = next to the data, else ~/.cache/w2s
    normalization: str = "percentile"  # "percentile" (per image) or "meanstd" (dataset z-score, the original)
    percentiles: tuple[float, float] = (1.0, 99.8)
    target_normalization: str = "auto"  # "input" | "own" | "fit" | "auto" (= "fit" for the 8-bit release and jdsr, else "input")
    # model
    preset: str = "default"
    init_weights: str = ""  # fine-tune: start from this checkpoint's weights (same architecture), fresh optimizer
    model: UNetConfig = field(default_factory=UNetConfig)
    # optimisation
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    patch_size: int = 128
    loss: str = "l1"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" (to lr/100 over all epochs) or "constant"
    warmup_steps: int = 50
    max_minutes: float = 0.0  # stop once training steps (not validation) have taken this long; 0 = no limit
    augment: bool = True
    synthetic_noise: float = 0.0  # share of inputs drawn afresh from each pair's fitted noise model (denoise only)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    amp: bool = True  # mixed precision (float16); only ever used on CUDA
    cpu_bf16: bool = False  # bfloat16 autocast for training steps on CPU (docs/performance.md has its measured effect)
    val_max_images: int = 0  # 0 = every validation image
    select_metric: str = "auto"  # best epoch by: loss | psnr | si_psnr | ssim; auto = see training.blindspot
    panel_every: int = 5  # log a noisy | prediction | target panel every N epochs
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # outputs and tracking
    out_dir: str = "runs"
    run_name: str = ""
    experiment: str = "w2s-denoising"
    tracking_uri: str = ""  # empty = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    registered_model: str = "auto"  # auto = w2s-unet, or w2s-unet-jdsr for 2x models; empty = do not register
    log_model: bool = True

    def validate(self) -> "TrainConfig":
        _check(self.task in TASKS, "task", self.task, " | ".join(TASKS))
        _check(0 < self.n2v_fraction <= 0.25, "n2v_fraction", self.n2v_fraction, "a fraction in (0, 0.25]")
        _check(1 <= self.n2v_radius <= 16, "n2v_radius", self.n2v_radius, "an integer from 1 to 16")
        _check((self.task == "jdsr") == (self.model.scale == 2), "model.sr_head", self.model.sr_head,
               "'shuffle' or 'transpose' for task jdsr, 'none' for the other tasks")
        _check(self.layout in LAYOUTS, "layout", self.layout, " | ".join(LAYOUTS))
        _check(self.noise_level in NOISE_LEVELS, "noise_level", self.noise_level, " | ".join(NOISE_LEVELS))
        _check(self.normalization in ("percentile", "meanstd"), "normalization", self.normalization,
               "'percentile' or 'meanstd'")
        _check(self.target_normalization in ("auto", "input", "own", "fit"), "target_normalization",
               self.target_normalization, "'auto', 'input', 'own' or 'fit'")
        lo, hi = self.percentiles
        _check(0 <= lo < hi <= 100, "percentiles", self.percentiles, "two numbers 0 <= low < high <= 100")
        _check(self.preset in PRESETS, "preset", self.preset, " | ".join(PRESETS))
        _check(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        _check(self.steps_per_epoch >= 1, "steps_per_epoch", self.steps_per_epoch, "at least 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")
        _check(self.patch_size >= 2 ** self.model.depth and self.patch_size % 2 ** self.model.depth == 0,
               "patch_size", self.patch_size, f"a positive multiple of 2**depth = {2 ** self.model.depth}")
        _check(self.loss in ("l1", "mse"), "loss", self.loss, "'l1' or 'mse'")
        _check(self.lr > 0, "lr", self.lr, "positive")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "non-negative")
        _check(self.schedule in ("cosine", "constant"), "schedule", self.schedule, "'cosine' or 'constant'")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "non-negative")
        _check(0 <= self.synthetic_noise <= 1 and (self.synthetic_noise == 0 or self.task == "denoise"),
               "synthetic_noise", self.synthetic_noise, "a fraction in [0, 1], and 0 unless task is denoise")
        _check(self.max_minutes >= 0, "max_minutes", self.max_minutes, "non-negative (0 = no time limit)")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
               self.device, "auto | cpu | cuda | cuda:N")
        _check(self.val_max_images >= 0, "val_max_images", self.val_max_images, "non-negative")
        _check(self.select_metric in SELECT_METRICS and (self.task != "n2v" or self.select_metric in ("auto", "loss")),
               "select_metric", self.select_metric,
               "'auto' or 'loss' for n2v (it has no clean data), else " + " | ".join(SELECT_METRICS))
        _check(self.panel_every >= 1, "panel_every", self.panel_every, "at least 1")
        _check(self.threads >= 0, "threads", self.threads, "non-negative")
        parse_fovs(self.val_fovs, "val_fovs")
        parse_fovs(self.test_fovs, "test_fovs")
        self.model.validate()
        return self

    def registered_model_name(self) -> str | None:
        """The model registry name: a jdsr model (2x outputs) gets its own, so that `models:/w2s-unet@alias`
        always serves same-size denoisers."""
        if self.registered_model == "auto":
            return "w2s-unet-jdsr" if self.task == "jdsr" else "w2s-unet"
        return self.registered_model or None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["percentiles"] = list(self.percentiles)
        return data

    def flat(self) -> dict[str, Any]:
        """Flat `model.depth`-style keys, one MLflow param each."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a (possibly partial) mapping: defaults, then the preset's model shape, then the mapping."""
        data = dict(data)
        unknown = sorted(set(data) - _field_types(cls).keys())
        if unknown:
            raise UserError(f"{source}: unknown config key(s): {', '.join(unknown)}")
        model = data.pop("model", None) or {}
        if not isinstance(model, dict):
            raise UserError(f"{source}: 'model' must be a mapping")
        unknown = sorted(set(model) - _field_types(UNetConfig).keys())
        if unknown:
            raise UserError(f"{source}: unknown model key(s): {', '.join('model.' + k for k in unknown)}")
        values = {k: _coerce(k, v, _field_types(cls)[k]) for k, v in data.items()}
        preset = values.get("preset", "default")
        if preset not in PRESETS:
            raise UserError(f"invalid config value preset={preset!r}: expected {' | '.join(PRESETS)}")
        sr_default = {"sr_head": "shuffle"} if values.get("task") == "jdsr" else {}  # measured better (README)
        model_values = {**PRESETS[preset], **sr_default,
                        **{k: _coerce(f"model.{k}", v, _field_types(UNetConfig)[k]) for k, v in model.items()}}
        return cls(model=UNetConfig(**model_values), **values)


def _field_types(cls: type) -> dict[str, type]:
    return {f.name: type(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Check a config value against its field's type; ints are accepted for floats, lists for tuples."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is tuple and isinstance(value, (list, tuple)) and len(value) == 2 \
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    if kind is UNetConfig or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise UserError(f"invalid config value {name}={value!r}: expected {kind.__name__}"
                    + (" of two numbers" if kind is tuple else ""))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (validated later, together with CLI overrides)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        text = path.read_text()
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"{path}: cannot parse config ({type(exc).__name__}: {first})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: config must be a mapping of keys to values")
    return data


def parse_fovs(spec: str, name: str = "fovs") -> frozenset[int]:
    """'071-080,095' -> {71, ..., 80, 95}. Empty string -> empty set."""
    fovs: set[int] = set()
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                fovs.update(range(lo, hi + 1))
            else:
                fovs.add(int(part))
        except ValueError:
            raise UserError(f"invalid {name} '{spec}': expected ranges like '071-080,095'") from None
    return frozenset(fovs)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise UserError(f"invalid config value {name}={value!r}: expected {expected}")
