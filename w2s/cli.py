"""`w2s` console script: thin click commands over functions that can be called from Python."""

from __future__ import annotations

import sys
from typing import Any

import click

from training.config import LAYOUTS, NOISE_LEVELS, PRESETS, TASKS, TrainConfig, load_config_file
from training.errors import UserError


class W2SGroup(click.Group):
    """Turns a `UserError` anywhere below into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"w2s: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:  # training.resilience.Interrupted says what was saved, and its code
            click.echo(f"w2s: {exc or 'interrupted'}", err=True)
            sys.exit(getattr(exc, "exit_code", 130))


@click.group(cls=W2SGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli() -> None:
    """Train, evaluate and package U-Net denoisers for fluorescence microscopy (W2S, AI4Life-MDC24)."""


# option name -> config key; None values (not given) leave the config file / defaults alone
TRAIN_OPTIONS = {
    "task": "task", "data": "data", "layout": "layout", "noise_level": "noise_level", "val_fovs": "val_fovs",
    "cache_dir": "cache_dir", "normalization": "normalization", "preset": "preset", "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch", "batch_size": "batch_size", "patch_size": "patch_size", "loss": "loss",
    "lr": "lr", "seed": "seed", "device": "device", "out_dir": "out_dir", "run_name": "run_name",
    "experiment": "experiment", "tracking_uri": "tracking_uri", "threads": "threads", "log_model": "log_model",
    "depth": "model.depth", "base_channels": "model.base_channels", "batch_norm": "model.batch_norm",
    "residual": "model.residual", "upsample": "model.upsample", "sr_head": "model.sr_head",
    "max_minutes": "max_minutes", "init_weights": "init_weights",
}


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or JSON config file.")
@click.option("--task", type=click.Choice(TASKS), help="denoise (supervised, default) | n2v (Noise2Void: noisy "
              "images only) | jdsr (joint denoising + 2x super-resolution, widefield -> SIM).")
@click.option("--data", help="Dataset root (any W2S layout or inputs/ + targets/). Default: embedded synthetic demo data.")
@click.option("--layout", type=click.Choice(LAYOUTS), help="Force a data layout instead of detecting it.")
@click.option("--noise-level", type=click.Choice(NOISE_LEVELS), help="Input noise level (target is avg400).")
@click.option("--val-fovs", help="FOVs held out for validation, e.g. '071-080'.")
@click.option("--cache-dir", help="Where averaged raw stacks are cached.")
@click.option("--normalization", type=click.Choice(["percentile", "meanstd"]))
@click.option("--preset", type=click.Choice(list(PRESETS)), help="'seed' = the original project's network.")
@click.option("--depth", type=int)
@click.option("--base-channels", type=int)
@click.option("--batch-norm/--no-batch-norm", default=None)
@click.option("--residual/--no-residual", default=None)
@click.option("--upsample", type=click.Choice(["bilinear", "transpose"]))
@click.option("--sr-head", type=click.Choice(["shuffle", "transpose"]), help="--task jdsr: the 2x output head.")
@click.option("--init-weights", type=click.Path(), help="Fine-tune: start from this checkpoint's weights (same model).")
@click.option("--epochs", type=int)
@click.option("--steps-per-epoch", type=int)
@click.option("--batch-size", type=int)
@click.option("--patch-size", type=int)
@click.option("--loss", type=click.Choice(["l1", "mse"]))
@click.option("--lr", type=float)
@click.option("--max-minutes", type=float, help="Wall-clock budget for the training steps (0 = none).")
@click.option("--seed", type=int)
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--threads", type=int, help="torch CPU threads (0 = default).")
@click.option("--out-dir", help="Parent folder of run folders (default: runs).")
@click.option("--run-name")
@click.option("--experiment", help="MLflow experiment name.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--log-model/--no-log-model", default=None, help="Log and register the model with MLflow.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other config key, e.g. --set model.depth=4.")
@click.option("--resume", type=click.Path(), help="Continue a run: its folder, its last.pt, or runs/latest.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_file: str | None, sets: tuple[str, ...], resume: str | None, quiet: bool, **options: Any) -> None:
    """Train a U-Net denoiser and track it in MLflow."""
    from training.trainer import resume_config, train as run_training

    if resume:
        config = resume_config(resume, options.get("epochs"))
    else:
        config = build_config(config_file, options, sets)
    result = run_training(config, resume=resume, progress=not quiet)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    best = result.best_metrics
    scores = (f"val PSNR {best['val_psnr']:.2f} dB, SI-PSNR {best['val_si_psnr']:.2f} dB, SSIM {best['val_ssim']:.4f}  "
              f"(noisy input: {result.noisy_metrics['psnr']:.2f} dB, {result.noisy_metrics['si_psnr']:.2f} dB, "
              f"{result.noisy_metrics['ssim']:.4f})" if "val_psnr" in best else f"val loss {best['val_loss']:.4f} (no targets)")
    click.echo(
        f"\nbest epoch {result.best_epoch}: {scores}\n"
        f"best checkpoint: {result.best_checkpoint}\n"
        f"MLflow run:      {result.run_id} ({result.tracking_uri})\n"
        f"look at it:      make mlflow-ui   (then open http://127.0.0.1:5000)"
    )


def build_config(config_file: str | None, options: dict[str, Any], sets: tuple[str, ...]) -> TrainConfig:
    """Defaults < config file < --set < explicit options; validated once, at the end."""
    import yaml

    data: dict[str, Any] = load_config_file(config_file) if config_file else {}
    overrides = []
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        overrides.append((key.strip(), yaml.safe_load(raw) if raw.strip() else ""))  # KEY= means empty, not null
    overrides += [(TRAIN_OPTIONS[name], value) for name, value in options.items() if value is not None]
    for key, value in overrides:
        if key.startswith("model."):
            if not isinstance(data.get("model"), dict):
                data["model"] = {}
            data["model"][key[len("model."):]] = value
        else:
            data[key] = value
    return TrainConfig.from_dict(data, source=config_file or "options").validate()


def _register_stage_commands() -> None:
    """Commands of later stages live in their own modules; each lists its commands in `COMMANDS`."""
    from w2s import evaluation_commands, submission_commands

    for command in evaluation_commands.COMMANDS + submission_commands.COMMANDS:
        cli.add_command(command)


_register_stage_commands()


def main() -> None:
    cli(prog_name="w2s")


if __name__ == "__main__":
    main()
