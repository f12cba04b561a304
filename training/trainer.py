"""The training loop: data -> patches -> U-Net -> validation -> checkpoints and an MLflow run."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from tqdm import tqdm

from training import distributed
from training.blindspot import BlindSpotSampler, MaskedLoss, epoch_summary, improved, selection_metric, validate_n2v
from training.checkpoint import code_version, load_weights, read_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.layouts import ImagePair, discover_pairs, fingerprint, load_pairs
from training.data.normalization import Normalization, fit_normalization
from training.data.sampler import PatchSampler
from training.data.split import Split, split_by_fov
from training.data.synthetic import ensure_synthetic_w2s
from training.errors import UserError
from training.io import write_text
from training.metrics import psnr, scale_invariant_psnr, ssim
from training.model import UNet, count_parameters, to_device
from training.predict import predict_image, select_device
from training.resilience import GracefulStop, fault_point, tracked_run
from training.superres import on_target_grid
from training.tracking import resolve_tracking_uri
from training.visualize import display_range, loss_curve_png, panel

DEMO_DATA_DIR = Path("data") / "demo-w2s"
PANEL_IMAGES = 3


@dataclass
class PreparedData:
    root: Path
    layout: str
    split: Split
    train: list[ImagePair]
    val: list[ImagePair]
    fingerprint: str


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    run_id: str
    tracking_uri: str
    best_epoch: int
    best_metrics: dict[str, float]
    noisy_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def prepare_data(config: TrainConfig, progress: bool = True) -> PreparedData:
    """Find, split and load the pairs; every data problem surfaces here, before anything is written."""
    root = Path(config.data) if config.data else ensure_synthetic_w2s(DEMO_DATA_DIR, progress=progress)
    layout, sources = discover_pairs(root, config.layout, config.noise_level, config.cache_dir, progress,
                                     sim=config.task == "jdsr")
    if layout == "noisy" and config.task != "n2v":
        raise UserError(f"{root}: noisy images only, no targets to train '{config.task}' on (use --task n2v)")
    split = split_by_fov(sources, config.val_fovs, config.test_fovs)
    if not split.train:
        raise UserError(f"{root}: no training images left after holding out val FOVs {config.val_fovs} "
                        f"and test FOVs {config.test_fovs}")
    if not split.val:
        raise UserError(f"{root}: no validation images (val FOVs {config.val_fovs} match no file)")
    val_sources = split.val[: config.val_max_images] if config.val_max_images else split.val
    train = load_pairs(split.train, scale=config.model.scale)
    val = load_pairs(val_sources, scale=config.model.scale)
    return PreparedData(root, layout, split, train, val, fingerprint(sources))


def train(config: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> TrainResult | None:
    """Train a U-Net as `config` says; with `resume`, continue the run whose last checkpoint is given.

    Under torchrun every rank calls this; only rank 0 returns a result (the others return None).
    """
    state = None
    if resume:
        state = read_checkpoint(_last_checkpoint_path(resume))
        if "optimizer" not in state:
            raise UserError(f"{resume}: checkpoint holds no training state to resume from (use last.pt)")
        if config.model != TrainConfig.from_dict(state["config"]).model:
            raise UserError(f"{resume}: checkpoint was trained with another model config ({state['config']['model']})")
        # continue where the run lives, whatever the current directory is
        config.data = config.data or state["data_root"]
        config.tracking_uri = state.get("tracking_uri") or config.tracking_uri
    config.validate()
    device = select_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"invalid config value device={config.device!r}: CUDA is not available on this machine")
    context, device = distributed.setup(device)
    progress = progress and context.is_main
    with distributed.main_first(context):  # rank 0 builds any data cache; the others then read it
        data = prepare_data(config, progress)
    target_norm = config.target_normalization
    if target_norm == "auto":  # 8-bit images are stretched one by one, and SIM (jdsr) is another modality:
        target_norm = "fit" if config.task == "jdsr" or data.layout == "8bit" else "input"  # relate units per image
    select = selection_metric(config.select_metric, config.task, target_norm)
    fit_pairs = [(p.noisy, p.clean) for p in data.train] if target_norm == "fit" and config.task != "n2v" else []
    normalization = fit_normalization(config.normalization, config.percentiles, target_norm,
                                      [img for p in data.train for img in _training_images(p, config.task)], fit_pairs)
    if state is not None:
        normalization = Normalization.from_dict(state["normalization"])
        if state["data_fingerprint"] != data.fingerprint:
            raise UserError(f"{resume}: the data in {data.root} changed since this run started "
                            f"(fingerprint {data.fingerprint} != {state['data_fingerprint']})")

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = distributed.rank_rng(config.seed, context.rank)
    model = UNet(config.model)
    if config.init_weights and state is None:
        _init_weights(model, config)
    model = to_device(model, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = LRSchedule(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = config.amp and device.type == "cuda"
    if config.cpu_bf16 and device.type == "cpu" and not native_cpu_bf16() and context.is_main:
        tqdm.write("cpu_bf16: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), where bf16 autocast "
                   "ran 13x slower than float32 (docs/performance.md); training in float32")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = torch.nn.L1Loss() if config.loss == "l1" else torch.nn.MSELoss()
    sampler = PatchSampler(data.train, normalization, config.patch_size, config.batch_size, config.augment, rng,
                           config.model.scale, config.synthetic_noise)
    if config.synthetic_noise and context.is_main:
        fitted = sum(model is not None for model in sampler.noise_models)
        tqdm.write(f"synthetic_noise: noise models fitted to {fitted}/{len(data.train)} training images "
                   f"(the others keep their real noisy frame)")
    train_loss_fn = loss_fn
    if config.task == "n2v":  # noisy patches, blind-spot masked; the loss sees the masked pixels only
        sampler, train_loss_fn = BlindSpotSampler(data.train, normalization, config, rng), MaskedLoss(config.loss)

    start_epoch, history, best = 0, [], {}
    best_epoch, partial = 0, None
    if state is not None:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        schedule.replan(config)
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        rank_states = state["rng"].get("numpy_ranks") or [state["rng"]["numpy"]]
        if context.rank < len(rank_states):  # with more ranks than before, a new rank keeps its fresh stream
            rng.bit_generator.state = rank_states[context.rank]
        start_epoch, history = state["epoch"], list(state["history"])
        best, best_epoch = dict(state["best_metrics"]), state["best_epoch"]
        run_dir, run_id = Path(state["run_dir"]), state["mlflow_run_id"]
        partial = state.get("partial")  # a signal stopped the run inside epoch start_epoch + 1
        if context.is_main:
            for stale in run_dir.glob(".*.pt.*.tmp"):  # torn temporary files of a killed process; never read
                stale.unlink(missing_ok=True)
    elif context.is_main:
        run_dir = _new_run_dir(config)
        run_id = None
    net = distributed.wrap(model, context, device)
    train_seconds = 60 * history[-1].get("train_minutes", 0.0) if history else 0.0
    budget = 60 * config.max_minutes if config.max_minutes else None
    if not context.is_main:
        _follow(net, sampler, optimizer, scheduler, scaler, train_loss_fn, device, use_amp, config, start_epoch, context,
                budget, train_seconds, rng, partial)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    noisy_metrics = _noisy_metrics(data.val)
    tracking_uri = resolve_tracking_uri(config.tracking_uri)

    resume_hint = f"continue or bring the run back in sync with: w2s train --resume {run_dir}"
    with tracked_run(config.tracking_uri, config.experiment, config.run_name or run_dir.name, run_id, resume_hint) \
            as tracker, GracefulStop(f"The last complete checkpoint is {run_dir / 'last.pt'}") as stop:
        run_id = tracker.run_id
        if state is None:
            tracker.call("logging params", mlflow.log_params, config.flat())
            tracker.call("logging params", mlflow.log_params, {
                "n_parameters": count_parameters(model), "n_train_images": len(data.train),
                "n_val_images": len(data.val), "data_root": str(data.root.resolve())})
            tracker.call("logging metrics", mlflow.log_metrics, {f"noisy_{k}": v for k, v in noisy_metrics.items()})
            tracker.call("logging config.json", mlflow.log_artifact, str(run_dir / "config.json"))
        elif missing := tracker.sync_history(history, _epoch_metrics):
            tqdm.write(f"logged {missing} epoch(s) missing from MLflow run {run_id} (from {run_dir / 'last.pt'})")
        tracker.call("setting tags", mlflow.set_tags, {
            "git_commit": code_version(), "data_layout": data.layout, "noise_level": config.noise_level,
            "data_fingerprint": data.fingerprint, "device": str(device), "run_dir": str(run_dir),
            "precision": _precision(config, device, use_amp)})
        write_text(run_dir / "mlflow_run_id", run_id)
        write_text(run_dir.parent / "latest", str(run_dir))

        def save_last(epoch: int, partial_epoch: dict[str, Any] | None = None) -> None:
            save_checkpoint(run_dir / "last.pt", {
                **_payload(model, config, normalization, data, run_dir, run_id, epoch, history, best, best_epoch),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state,
                        "numpy_ranks": distributed.gather(rng.bit_generator.state, context)},
                "partial": partial_epoch,
            })

        def stop_here(where: str, unfinished: dict[str, Any] | None = None) -> Exception:
            """Save the state inside the current, unfinished epoch (if any); the exception ends the run."""
            if unfinished is not None and not context.enabled:  # under DDP the other ranks may be gone
                fault_point("stop_checkpoint")
                save_last(epoch - 1, unfinished)
            return stop.interrupted(f"stopped {where}; checkpoint {run_dir / 'last.pt'}. Continue with: "
                                    f"w2s train --resume {run_dir}")

        for epoch in range(start_epoch + 1, config.epochs + 1):
            if budget is not None and distributed.agree(train_seconds >= budget, context, device):
                break
            losses, seconds, out_of_time = _train_epoch(
                net, sampler, optimizer, scheduler, scaler, train_loss_fn, device, use_amp, config, epoch, progress,
                stop, partial, context, None if budget is None else budget - train_seconds)
            partial = None
            done = {"losses": losses, "seconds": seconds}
            if len(losses) < config.steps_per_epoch and not out_of_time:
                raise stop_here(f"in epoch {epoch} after step {len(losses)}/{config.steps_per_epoch}", done)
            train_seconds += seconds
            train_loss = distributed.mean(float(np.mean(losses)), context, device)
            if budget is not None and not out_of_time and (moved := _fit_schedule(
                    schedule, scheduler.last_epoch, train_seconds, budget, context, device)):
                tqdm.write(moved)
            patches_per_s = len(losses) * config.batch_size * context.world_size / seconds
            val = (validate_n2v(model, normalization, data.val, device, config) if config.task == "n2v"
                   else validate(model, normalization, data.val, device, loss_fn, should_stop=lambda: stop.requested))
            if val is None:
                raise stop_here(f"during validation of epoch {epoch}", done)
            record = {"epoch": epoch, "train_loss": train_loss, **val, "lr": scheduler.get_last_lr()[0],
                      "patches_per_s": patches_per_s, "train_minutes": train_seconds / 60, "schedule_end": schedule.end,
                      **{f"noisy_{k}": v for k, v in noisy_metrics.items()}}
            history.append(record)
            if improved(select, val, best):
                best, best_epoch = {k: v for k, v in val.items()}, epoch
                save_checkpoint(run_dir / "best.pt", _payload(model, config, normalization, data, run_dir, run_id,
                                                              epoch, history, best, best_epoch))
            save_last(epoch)
            fault_point("checkpointed")
            # logged after the checkpoint: an epoch in MLflow is always one that --resume will not redo
            tracker.call("logging metrics", mlflow.log_metrics, _epoch_metrics(record), step=epoch)
            _log_pictures(tracker, model, normalization, data.val, device, history, epoch, config)
            tqdm.write(f"epoch {epoch}/{config.epochs}: train_loss {train_loss:.4f}  "
                       f"{epoch_summary(config.task, val, noisy_metrics)}  {patches_per_s:.1f} patches/s")
            fault_point("epoch_end")
            if out_of_time:
                tqdm.write(f"time budget of {config.max_minutes:g} min of training reached")
                break
            if stop.requested:
                raise stop_here(f"after epoch {epoch}")

        tracker.call("logging best metrics", mlflow.log_metrics, {f"best_{k}": v for k, v in best.items()})
        tracker.call("setting tags", mlflow.set_tags, {"best_epoch": best_epoch, "best_epoch_metric": select})
        tracker.call("logging best.pt", mlflow.log_artifact, str(run_dir / "best.pt"), artifact_path="checkpoints")
        if config.log_model and _model_not_yet_logged(tracker, best_epoch):
            if tracker.call("logging the model", _log_model, run_dir / "best.pt", config, data.val[0].noisy):
                tracker.call("setting tags", mlflow.set_tag, "logged_model_epoch", best_epoch)
    distributed.shutdown(context)
    return TrainResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", run_id, tracking_uri, best_epoch, best,
                       noisy_metrics, history)


def _epoch_metrics(record: dict[str, float]) -> dict[str, float]:
    """What one epoch logs to MLflow (the noisy scores are logged once, at the start)."""
    return {k: v for k, v in record.items() if k != "epoch" and not k.startswith("noisy_")}


@functools.cache
def native_cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions. Without them bf16 autocast is emulated: 13x slower than
    float32 for the recipe's step on an AVX2-only EPYC, where an AVX512-BF16 EPYC ran it 2.25x faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own dispatch checks
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_bf16_active(config: TrainConfig, device: torch.device) -> bool:
    """config.cpu_bf16 asks for bf16 where it pays: on a CPU device whose CPU computes in bf16 natively."""
    return config.cpu_bf16 and device.type == "cpu" and native_cpu_bf16()


def _precision(config: TrainConfig, device: torch.device, use_amp: bool) -> str:
    if device.type == "cuda":
        return "float16 autocast" if use_amp else "float32"
    return "bfloat16 autocast" if cpu_bf16_active(config, device) else "float32"


def train_step(net, x, y, optimizer, scaler, loss_fn, use_amp, cpu_bf16: bool = False) -> float | None:
    """One optimisation step (under DDP, backward() averages the gradients over ranks); returns the loss,
    or None, taking no step, when the loss is not finite. use_amp: float16 autocast on CUDA (with the
    scaler); cpu_bf16: bfloat16 autocast on CPU (no scaler needed: bf16 has float32's exponent range)."""
    device_type, dtype, enabled = ("cpu", torch.bfloat16, True) if cpu_bf16 else ("cuda", torch.float16, use_amp)
    with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
        loss = loss_fn(net(x).float(), y)
    if not torch.isfinite(loss):
        return None
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def _train_epoch(net, sampler, optimizer, scheduler, scaler, loss_fn, device, use_amp, config, epoch, progress,
                 stop=None, partial=None, context=distributed.Context(), budget_s=None):
    """Train one epoch, or its rest after `partial` (losses and seconds so far). Returns (losses, seconds,
    out_of_time): fewer losses than steps when `stop` was requested (a signal) or the time budget ran out."""
    net.train()
    losses = list(partial["losses"]) if partial else []
    before = float(partial["seconds"]) if partial else 0.0
    first = len(losses)
    start = time.perf_counter()
    out_of_time = False
    bar = tqdm(range(first, config.steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", unit="step",
               initial=first, total=config.steps_per_epoch, disable=not progress, leave=False,
               dynamic_ncols=True, mininterval=0.5 if _is_tty() else 30)
    for step in bar:
        fault_point("step")
        if stop is not None and stop.requested:
            break
        if budget_s is not None and step > first:  # every rank stops at the step rank 0 decides
            out_of_time = distributed.agree(before + time.perf_counter() - start >= budget_s, context, device)
            if out_of_time:
                break
        x, y = sampler.sample()
        x, y = torch.from_numpy(x).to(device, non_blocking=True), torch.from_numpy(y).to(device, non_blocking=True)
        loss = train_step(net, x, y, optimizer, scaler, loss_fn, use_amp, cpu_bf16_active(config, device))
        if loss is None:
            raise UserError(f"training diverged at epoch {epoch} step {step}; lower lr={config.lr}")
        scheduler.step()
        losses.append(loss)
        elapsed = before + time.perf_counter() - start
        rate = len(losses) * config.batch_size * context.world_size / elapsed
        budget_left = {} if budget_s is None else {"budget_left": f"{max(budget_s - elapsed, 0) / 60:.1f}min"}
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", patches_s=f"{rate:.1f}", **budget_left)
    return losses, before + time.perf_counter() - start, out_of_time


def _follow(net, sampler, optimizer, scheduler, scaler, loss_fn, device, use_amp, config, start_epoch, context,
            budget, train_seconds, rng, partial=None) -> None:
    """A rank other than 0: train in step with rank 0 (DDP keeps the weights equal), write and log nothing.
    The collectives (budget decisions, loss mean, sampler states) come in the same order as on rank 0."""
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if budget is not None and distributed.agree(train_seconds >= budget, context, device):
            break
        losses, seconds, out_of_time = _train_epoch(
            net, sampler, optimizer, scheduler, scaler, loss_fn, device, use_amp, config, epoch, False, None,
            partial, context, None if budget is None else budget - train_seconds)
        partial = None
        train_seconds += seconds
        distributed.mean(float(np.mean(losses)), context, device)
        if budget is not None and not out_of_time:
            _fit_schedule(scheduler.lr_lambdas[0], scheduler.last_epoch, train_seconds, budget, context, device)
        distributed.gather(rng.bit_generator.state, context)  # rank 0 saves every rank's sampler state
        if out_of_time:
            break
    distributed.shutdown(context)


@torch.no_grad()
def validate(model: UNet, normalization: Normalization, pairs: list[ImagePair], device: torch.device,
             loss_fn: torch.nn.Module, should_stop=None) -> dict[str, float] | None:
    """Whole-image validation: loss in normalized units, PSNR/SI-PSNR/SSIM in the target's units as the
    challenge scores them (prediction in the input's units against the raw target). None when
    `should_stop()` turned true between images (a signal: validation is redone on resume)."""
    model.eval()
    scores: dict[str, list[float]] = {"val_loss": [], "val_psnr": [], "val_si_psnr": [], "val_ssim": []}
    for index, pair in enumerate(pairs):
        if index == 1:
            fault_point("validate")
        if should_stop is not None and should_stop():
            return None
        prediction = predict_image(model, normalization, pair.noisy, device)
        stats_in, stats_out = normalization.stats(pair.noisy), normalization.target_stats(pair.noisy, pair.clean)
        predicted_n = (prediction - stats_in[0]) / stats_in[1]
        target_n = normalization.normalize(pair.clean, stats_out)
        scores["val_loss"].append(float(loss_fn(torch.from_numpy(predicted_n), torch.from_numpy(target_n))))
        clean = np.asarray(pair.clean, dtype=np.float32)
        scores["val_psnr"].append(psnr(clean, prediction))
        scores["val_si_psnr"].append(scale_invariant_psnr(clean, prediction))
        scores["val_ssim"].append(ssim(clean, prediction))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _training_images(pair: ImagePair, task: str) -> tuple[np.ndarray, ...]:
    """What training may look at: n2v never sees a target, not even for normalization statistics."""
    return (pair.noisy,) if task == "n2v" else (pair.noisy, pair.clean)


def _noisy_metrics(pairs: list[ImagePair]) -> dict[str, float]:
    """The bar every model must clear: the noisy input itself (bicubic-upsampled for a 2x target) scored against
    the target (none without targets)."""
    if any(pair.clean is None for pair in pairs):
        return {}
    metrics = {"psnr": [], "si_psnr": [], "ssim": []}
    for pair in pairs:
        clean, noisy = np.asarray(pair.clean, np.float32), on_target_grid(pair.noisy, pair.clean)
        metrics["psnr"].append(psnr(clean, noisy))
        metrics["si_psnr"].append(scale_invariant_psnr(clean, noisy))
        metrics["ssim"].append(ssim(clean, noisy))
    return {k: float(np.mean(v)) for k, v in metrics.items()}


def _is_tty() -> bool:
    return sys.stderr.isatty()


def _fit_schedule(schedule: "LRSchedule", steps_done: int, train_seconds: float, budget_s: float,
                  context: distributed.Context, device: torch.device) -> str | None:
    """Move the cosine's end to fit the time budget; every rank takes the same end (their mean), as DDP
    needs the same lr everywhere. Returns what changed, to print, or None."""
    if not schedule.cosine:
        return None
    end = round(distributed.mean(float(schedule.fit_to_budget(steps_done, train_seconds, budget_s)), context, device))
    if end == schedule.end:
        return None
    before, schedule.end = schedule.end, end
    return (f"time budget: at {steps_done / train_seconds:.2f} steps/s the cosine schedule now ends at step {end} "
            f"(was {before}; {schedule.planned} planned), when the {budget_s / 60:g} min run out")


class LRSchedule:
    """Linear warm-up, then a cosine from lr to lr/100 ending at step `end` (or a constant lr).

    A callable object rather than a closure, so LambdaLR's state_dict saves `end` and a resumed run keeps
    an end that `fit_to_budget` moved.
    """

    def __init__(self, config: TrainConfig):
        self.warmup, self.cosine = config.warmup_steps, config.schedule == "cosine"
        self.planned = self.end = config.epochs * config.steps_per_epoch

    def replan(self, config: TrainConfig) -> None:
        """After loading a saved state: keep an end fitted to the budget, else follow the config's plan (a
        resume with more epochs stretches the cosine over them)."""
        fitted_end = self.end if self.end < self.planned else None
        self.__init__(config)
        if fitted_end is not None:
            self.end = min(fitted_end, self.planned)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.end - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    def fit_to_budget(self, steps_done: int, seconds: float, budget_s: float) -> int:
        """Where the cosine should end for it to end with the time budget, at the speed so far: the planned
        step when the plan fits (the run is then the same on any machine fast enough), else the last step
        that fits. Without this a slower machine stops mid-schedule, at a high lr, on an unannealed model."""
        if steps_done <= 0 or seconds <= 0:
            return self.end
        fits = steps_done + int(max(budget_s - seconds, 0.0) * steps_done / seconds)
        return max(min(self.planned, fits), steps_done, self.warmup + 1)


def _init_weights(model: UNet, config: TrainConfig) -> None:
    """Fine-tuning: the run starts from another run's weights; its optimizer, schedule and epochs start afresh."""
    checkpoint = read_checkpoint(config.init_weights)
    source = TrainConfig.from_dict(checkpoint["config"], source=config.init_weights)
    if source.model != config.model:
        differ = sorted(k for k, v in dataclasses.asdict(source.model).items()
                        if getattr(config.model, k) != v)
        raise UserError(f"{config.init_weights}: its model differs from this run's in " + ", ".join(
            f"{k} ({getattr(source.model, k)} there, {getattr(config.model, k)} here)" for k in differ))
    load_weights(model, checkpoint, config.init_weights)


def _payload(model, config, normalization, data, run_dir, run_id, epoch, history, best, best_epoch) -> dict[str, Any]:
    return {
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.to_dict(),
        "normalization": normalization.to_dict(),
        "noise_level": config.noise_level,
        "data_layout": data.layout,
        "data_root": str(data.root.resolve()),
        "data_fingerprint": data.fingerprint,
        "split": {name: sorted(data.split.groups(name)) for name in ("train", "val", "test")},
        "code_version": code_version(),
        "epoch": epoch,
        "history": history,
        "best_metrics": best,
        "best_epoch": best_epoch,
        "run_dir": str(run_dir),
        "mlflow_run_id": run_id,
        "tracking_uri": resolve_tracking_uri(config.tracking_uri),
        "saved_at": datetime.now().isoformat(timespec="seconds"),
    }


def _log_pictures(tracker, model, normalization, pairs, device, history, epoch, config) -> None:
    if tracker.offline:
        return
    with tempfile.TemporaryDirectory() as tmp:
        curve = Path(tmp) / "loss_curve.png"
        loss_curve_png(curve, history)
        tracker.call("logging loss_curve.png", mlflow.log_artifact, str(curve))
    if epoch % config.panel_every and epoch != config.epochs:
        return
    for pair in pairs[:PANEL_IMAGES]:
        prediction = predict_image(model, normalization, pair.noisy, device)
        images = [on_target_grid(pair.noisy, pair.clean), prediction] + ([pair.clean] if pair.clean is not None else [])
        value_range = display_range(images[-1])  # one range for all, so brightness compares honestly
        image = panel(images, [value_range] * len(images))
        tracker.call("logging panels", mlflow.log_image, image, artifact_file=f"panels/{pair.name}/epoch_{epoch:03d}.png")


def _model_not_yet_logged(tracker, best_epoch: int) -> bool:
    """Whether this run still lacks its best model in MLflow: `--resume` of a finished run (to bring MLflow
    in sync) must not register the same best.pt as another model version; more epochs with a new best do."""
    tags = tracker.call("reading tags", lambda: mlflow.get_run(tracker.run_id).data.tags) or {}
    return tags.get("logged_model_epoch") != str(best_epoch)


def _log_model(best_path: Path, config: TrainConfig, example: np.ndarray) -> bool:
    """Log the best model as an MLflow PyTorch model (with our safe checkpoint inside) and register it.

    The signature takes normalized (batch, 1, height, width) float32 images of any size.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from training.checkpoint import load_model

    loaded = load_model(best_path)
    size = min(64, *example.shape)
    crops = [np.asarray(example[:size, :size]), np.asarray(example[-size:, -size:])]
    # Two images, not one: MLflow exports the model with torch.export, which fixes any dimension of size 1
    # in the example to that size, so a batch of one would make a model that refuses larger batches.
    sample = np.stack([loaded.normalization.normalize(crop) for crop in crops])[:, None]
    spec = Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))])
    mlflow.pytorch.log_model(
        loaded.model, name="model", signature=ModelSignature(inputs=spec, outputs=spec), input_example=sample,
        extra_files=[str(best_path)], registered_model_name=config.registered_model_name(),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
    )
    return True


def _new_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.out_dir) / (f"{stamp}-{config.run_name}" if config.run_name else stamp)
    path, n = base, 1
    while True:  # mkdir claims the name atomically: two runs started in the same second get two folders
        try:
            path.mkdir(parents=True)
            return path.resolve()
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def resume_config(resume: str | Path, epochs: int | None = None) -> TrainConfig:
    """The config a run was started with (optionally with more epochs), to continue it unchanged."""
    config = TrainConfig.from_dict(read_checkpoint(_last_checkpoint_path(resume))["config"], source=str(resume))
    if epochs is not None:
        config.epochs = epochs
    return config


def _last_checkpoint_path(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_file() and path.name == "latest":
        path = Path(path.read_text().strip())
    return path / "last.pt" if path.is_dir() else path
