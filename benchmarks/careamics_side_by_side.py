"""What a user would run instead: CAREamics' default CARE, trained for the same minutes on the same split.

Runs in a separate environment that has CAREamics (it pins its own torch, so it does not belong in the
project's venv): `make bench-careamics MINUTES=18` creates `.venv-careamics` and runs
`python -m benchmarks.careamics_side_by_side --data ../shared/data/w2s-8bit --minutes 18`
there with the project on PYTHONPATH. This reads the pairs with the harness's own layout and FOV split
(train FOVs 001-070, validation 071-080), trains `create_care_config`'s defaults (U-Net depth 2, 32
filters; only patch size, batch and the step count per epoch are set, to match the harness) until its
training steps have taken `--minutes` (as the harness's `max_minutes` counts: steps only, not validation or
data preparation), predicts the validation images with the best checkpoint
(CAREamics' choice by validation loss, on the same held-out FOVs the harness selects on), and writes them
as `<name>.tif` under `--out`, with a JSON report of the timings. Score them beside the harness's model
with the same metric code: `w2s evaluate --model RUN --split val -p careamics=OUT/predictions`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.common import save_report
from training.config import TrainConfig
from training.data.layouts import discover_pairs, load_pairs
from training.data.split import split_by_fov
from training.errors import UserError
from training.io import write_tiff


def split_arrays(data: Path, val_fovs: str) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray, list[str]]]]:
    """The harness's own pairs and FOV split as CAREamics takes them: (noisy SYX, clean SYX, names) per split."""
    layout, sources = discover_pairs(data, "auto", "avg1", progress=False)
    split = split_by_fov(sources, val_fovs, TrainConfig.test_fovs)  # the official test FOVs stay out, as in training
    arrays = {}
    for name in ("train", "val"):
        pairs = load_pairs(getattr(split, name))
        arrays[name] = (np.stack([np.asarray(p.noisy, np.float32) for p in pairs]),
                        np.stack([np.asarray(p.clean, np.float32) for p in pairs]), [p.name for p in pairs])
    return layout, arrays


def step_budget(seconds: float):
    """A Lightning callback that stops the fit once its training steps (not validation) have taken `seconds`;
    built here because Lightning is only in the CAREamics environment."""
    from lightning.pytorch.callbacks import Callback

    class StepBudget(Callback):
        def __init__(self) -> None:
            self.seconds, self.spent, self.steps, self._start = seconds, 0.0, 0, 0.0

        def on_train_batch_start(self, trainer, *args) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, *args) -> None:
            self.spent += time.perf_counter() - self._start
            self.steps += 1
            if self.spent >= self.seconds:
                trainer.should_stop = True

    return StepBudget()


def per_image(predictions: list[np.ndarray], count: int) -> list[np.ndarray]:
    """CAREamics returns one array per input array (an SYX stack comes back as one (S, 1, Y, X) array, say):
    split them into `count` 2-D images, in order."""
    images = [image for array in predictions for image in np.asarray(array, np.float32).reshape(-1, *array.shape[-2:])]
    if len(images) != count:
        raise RuntimeError(f"CAREamics returned {len(images)} images for {count} inputs")
    return images


def run(data: Path, out: Path, minutes: float, val_fovs: str, patch_size: int, batch_size: int,
        steps_per_epoch: int) -> dict:
    layout, arrays = split_arrays(data, val_fovs)
    try:
        import torch
        from careamics import CAREamist
        from careamics.config import create_care_config
    except ImportError as exc:
        raise UserError(f"{exc.name} is not installed in this environment; `make bench-careamics` runs this "
                        f"in .venv-careamics, which has CAREamics") from None
    (train_x, train_y, _), (val_x, val_y, val_names) = arrays["train"], arrays["val"]
    config = create_care_config(experiment_name="w2s_careamics", data_type="array", axes="SYX",
                                patch_size=[patch_size, patch_size], batch_size=batch_size, num_epochs=10**6,
                                num_steps=steps_per_epoch)
    budget = step_budget(minutes * 60)
    careamist = CAREamist(config, work_dir=out / "work", callbacks=[budget], enable_progress_bar=True)
    parameters = sum(p.numel() for p in careamist.model.parameters())
    start = time.perf_counter()
    careamist.train(train_data=train_x, train_data_target=train_y, val_data=val_x, val_data_target=val_y)
    fit_seconds = time.perf_counter() - start
    trainer = careamist.trainer
    start = time.perf_counter()
    predictions, _ = careamist.predict(val_x, axes="SYX", data_type="array", checkpoint="best")
    predict_seconds = time.perf_counter() - start
    for name, image in zip(val_names, per_image(predictions, len(val_names))):
        write_tiff(out / "predictions" / f"{name}.tif", image)
    report = {
        "tool": "careamics", "data": str(data), "layout": layout, "val_fovs": val_fovs,
        "train_images": len(train_x), "val_images": len(val_x), "parameters": parameters,
        "patch_size": patch_size, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
        "budget_minutes": minutes, "train_minutes": budget.spent / 60, "fit_minutes": fit_seconds / 60,
        "steps": budget.steps, "epochs": int(trainer.current_epoch),
        "patches_per_s": budget.steps * batch_size / max(budget.spent, 1e-9),
        "best_checkpoint": str(trainer.checkpoint_callback.best_model_path),
        "predict_seconds": predict_seconds, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    save_report(report, out / "report.json")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.careamics_side_by_side", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path("..") / "shared" / "data" / "w2s-8bit"))
    parser.add_argument("--out", default="runs/bench/careamics")
    parser.add_argument("--minutes", type=float, default=18.0, help="minutes of training steps (validation not counted), as the harness's max_minutes")
    parser.add_argument("--val-fovs", default=TrainConfig.val_fovs)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=250)
    args = parser.parse_args(argv)
    try:
        report = run(Path(args.data), Path(args.out), args.minutes, args.val_fovs, args.patch_size, args.batch_size,
                     args.steps_per_epoch)
    except UserError as exc:
        print(f"python -m benchmarks.careamics_side_by_side: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
