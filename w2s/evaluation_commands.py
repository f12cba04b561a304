"""`w2s predict`, `w2s evaluate` and `w2s runs`: thin click commands over training.predict and evaluation/.

The group in w2s/cli.py registers `COMMANDS` and turns every `UserError` into one line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from training.config import LAYOUTS, NOISE_LEVELS
from training.errors import UserError
from training.predict import DEFAULT_BATCH_SIZE, DEFAULT_TILE

MODEL_HELP = ("Checkpoint file, run folder, runs/latest, or an MLflow model URI "
              "(runs:/<run id>/model, models:/w2s-unet@<alias>, models:/w2s-unet/<version>).")


def _tiling_options(func):
    for option in reversed([
        click.option("--tile", type=int, default=DEFAULT_TILE, show_default=True,
                     help="Tile size in pixels (rounded up to a multiple of 2**depth)."),
        click.option("--overlap", type=int, default=None,
                     help="Tile overlap in pixels [default: the network's receptive radius, 72 for depth 3]."),
        click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True,
                     help="Tiles per forward pass."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        click.option("--no-amp", is_flag=True, help="Full precision on CUDA (mixed precision is the default there)."),
        click.option("--tta", is_flag=True, help="Test-time augmentation: average the 8 flips/turns (8x slower)."),
        click.option("--tracking-uri", default="", help="MLflow tracking URI for model URIs and logging "
                     "[default: the run's, else $MLFLOW_TRACKING_URI or sqlite:///mlflow.db]."),
    ]):
        func = option(func)
    return func


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(readable=False))  # the reader names the problem
@click.option("--model", "-m", "model_spec", required=True, help=MODEL_HELP)
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@_tiling_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def predict(inputs: tuple[str, ...], model_spec: str, out_dir: str, tile: int, overlap: int | None, batch_size: int,
            device: str, no_amp: bool, tta: bool, tracking_uri: str, quiet: bool) -> None:
    """Denoise images: INPUT... are TIFF, PNG or NPY files (or folders of them); writes OUT/<name>.tif.

    2-D images and stacks (leading axes are slices, the last two Y, X) of any size; the output is float32,
    the same shape (Y and X doubled for a --task jdsr model), in the input's units.
    """
    from tqdm import tqdm

    from training.io import check_finite, read_image, write_tiff
    from training.ensemble import with_tta
    from training.predict import predict_stack, resolve_model

    files = _expand_inputs(inputs)
    out = Path(out_dir)
    targets = {}
    for path in files:
        target = out / f"{path.stem}.tif"
        if target in targets.values():
            other = next(p for p, t in targets.items() if t == target)
            raise UserError(f"{path}: same output name as {other} ({target})")
        if target.resolve() == path.resolve():
            raise UserError(f"{path}: would be overwritten by its own output; choose another --out")
        targets[path] = target
    if len(files) > 1:  # read every input before writing any output: a bad file in the list leaves nothing behind
        for path in tqdm(files, desc="checking inputs", unit="image", disable=quiet, dynamic_ncols=True):
            check_finite(read_image(path, mmap=True), path)
    torch_device = _device(device)
    loaded = resolve_model(model_spec, tracking_uri, torch_device)
    bar = tqdm(files, desc="predicting", unit="image", disable=quiet or len(files) < 2, dynamic_ncols=True)
    for path in bar:
        array = read_image(path, mmap=True)
        if array.ndim == 3 and path.suffix.lower() == ".png" and array.shape[-1] in (3, 4):
            click.echo(f"w2s: note: {path} is an RGB(A) PNG; denoising its first channel", err=True)
            array = array[..., 0]
        check_finite(array, path)
        network = with_tta(loaded.model, tta)
        output = predict_stack(network, loaded.normalization, array, tile, overlap, batch_size, torch_device,
                               not no_amp, progress=not quiet)
        try:
            write_tiff(targets[path], output)
        except OSError as exc:  # a read-only or full output folder: nothing half-written stays behind
            raise UserError(f"{targets[path]}: cannot write output ({exc.strerror or exc})") from None
    click.echo(f"wrote {len(files)} float32 TIFF file(s) to {out}")


@click.command()
@click.option("--model", "-m", "model_spec", help=MODEL_HELP + " [default: none; give --predictions instead]")
@click.option("--data", type=click.Path(), help="Dataset root [default: the data the model was trained on].")
@click.option("--split", type=click.Choice(["auto", "test", "val"]), default="auto", show_default=True,
              help="auto = the held-out split: test if the data has test images, else val.")
@click.option("--noise-level", type=click.Choice(NOISE_LEVELS), help="[default: the model's, else avg1]")
@click.option("--layout", type=click.Choice(LAYOUTS), help="[default: the model's for its own data, else auto]")
@click.option("--predictions", "-p", multiple=True, metavar="NAME=DIR",
              help="Saved outputs of another method, matched to targets by file name (repeatable).")
@click.option("--baselines", default="all", show_default=True,
              help="all | none | comma list of gaussian,median,nlm,bm3d (bm3d needs the bm3d package).")
@click.option("--tune-split", type=click.Choice(["auto", "val", "train"]), default="auto", show_default=True,
              help="Where baselines are tuned: auto = val when reporting test, train when reporting val.")
@click.option("--tune-images", type=int, default=3, show_default=True, help="Images to tune baselines on.")
@click.option("--tune-metric", type=click.Choice(["psnr", "si_psnr", "ssim", "ms_ssim"]), default="si_psnr",
              show_default=True)
@click.option("--val-fovs", help="Validation FOVs when there is no model [default: 071-080].")
@click.option("--test-fovs", help="Test FOVs when there is no model [default: 081-120].")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False),
              help="Output folder [default: outputs/evaluation/<time>-<name>-<split>].")
@click.option("--panels", type=int, default=3, show_default=True, help="Before/after panels for the first N images.")
@click.option("--save-predictions", is_flag=True, help="Also write the model's outputs to OUT/predictions/.")
@_tiling_options
@click.option("--no-mlflow", is_flag=True, help="Do not log the scores on the model's training run.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(model_spec: str | None, data: str | None, split: str, noise_level: str | None, layout: str | None,
             predictions: tuple[str, ...], baselines: str, tune_split: str, tune_images: int, tune_metric: str,
             val_fovs: str | None, test_fovs: str | None, out_dir: str | None, panels: int, save_predictions: bool,
             tile: int, overlap: int | None, batch_size: int, device: str, no_amp: bool, tta: bool, tracking_uri: str,
             no_mlflow: bool, quiet: bool) -> None:
    """Score a model, the noisy input, classical baselines and saved outputs of other tools in one table.

    Writes per_image.csv, summary.json, report.md and panels/*.png, prints the table, and logs test_psnr,
    test_si_psnr, test_ssim, test_ms_ssim on the model's MLflow training run.
    """
    from evaluation.evaluate import default_out_dir, evaluate_model, parse_predictions, score_predictions

    named = parse_predictions(predictions)
    progress = not quiet
    if model_spec:
        if val_fovs or test_fovs:
            raise UserError("--val-fovs/--test-fovs apply without --model; a model's split comes from its checkpoint")
        label = Path(model_spec.rstrip("/")).name if not model_spec.endswith("latest") else "latest"
        out = Path(out_dir) if out_dir else default_out_dir(label.replace("@", "-"), split)
        result = evaluate_model(model_spec, data, split, noise_level, layout, named, baselines, tune_split,
                                tune_images, tune_metric, out, panels, tile, overlap, batch_size, device, not no_amp,
                                tracking_uri, not no_mlflow, save_predictions, progress, tta)
    else:
        if not data:
            raise UserError("give --model, or --data with --predictions NAME=DIR")
        if not named:
            raise UserError("nothing to score: give --model or at least one --predictions NAME=DIR")
        if save_predictions or tta:
            raise UserError(f"{'--save-predictions' if save_predictions else '--tta'} needs --model")
        from training.config import TrainConfig

        defaults = TrainConfig()
        out = Path(out_dir) if out_dir else default_out_dir("predictions", split)
        result = score_predictions(named, data, split, noise_level or "avg1", layout or "auto", baselines,
                                   tune_split, tune_images, tune_metric, out, panels, val_fovs or defaults.val_fovs,
                                   test_fovs or defaults.test_fovs, progress=progress)
    click.echo("")
    click.echo(result.table)
    click.echo(f"scored {result.summary['n_images_scored']} of {result.summary['data']['n_images']} images "
               f"({result.summary['data']['split']} split); wrote {result.out_dir}/ "
               f"(report.md, summary.json, per_image.csv, panels/)")
    if result.mlflow_message:
        click.echo(result.mlflow_message)


DEFAULT_COLUMNS = ("test_psnr", "test_si_psnr", "test_ssim", "test_ms_ssim", "best_val_psnr", "best_val_si_psnr",
                   "best_val_ssim")


@click.command()
@click.option("--experiment", default="w2s-denoising", show_default=True, help="MLflow experiment name.")
@click.option("--sort", default="test_psnr", show_default=True, help="Metric to sort by (or params.X, tags.X).")
@click.option("--ascending", is_flag=True, help="Smallest first (default: largest first).")
@click.option("--max-results", type=int, default=50, show_default=True)
@click.option("--columns", default=",".join(DEFAULT_COLUMNS), show_default=True, help="Metrics to show, comma list.")
@click.option("--tracking-uri", default="", help="[default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db]")
def runs(experiment: str, sort: str, ascending: bool, max_results: int, columns: str, tracking_uri: str) -> None:
    """List the runs of an experiment as a table, best first by a metric (via mlflow.search_runs)."""
    from evaluation.tracking import list_runs

    table, uri = list_runs(experiment, tracking_uri, sort, ascending, max_results)
    if table.empty:
        click.echo(f"no runs in experiment '{experiment}' ({uri})")
        return
    click.echo(format_runs(table, [c.strip() for c in columns.split(",") if c.strip()], sort))
    click.echo(f"{len(table)} run(s) in '{experiment}' ({uri}), sorted by {sort} "
               f"{'ascending' if ascending else 'descending'}")


def format_runs(table, metrics: list[str], sort: str) -> str:
    """A fixed-width text table: run id, name, status, start, split evaluated, then the metric columns."""
    import math

    shown = [m for m in metrics if f"metrics.{m}" in table.columns]
    if "." not in sort and sort not in shown and f"metrics.{sort}" in table.columns:
        shown.insert(0, sort)
    headers = ["run id", "run name", "status", "started", "eval split", *shown]
    rows = []
    for _, run in table.iterrows():
        start = run.get("start_time")
        row = [str(run["run_id"])[:12], str(run.get("tags.mlflow.runName") or ""), str(run.get("status") or ""),
               start.strftime("%Y-%m-%d %H:%M") if hasattr(start, "strftime") else "", str(run.get("tags.eval.split") or "")]
        for metric in shown:
            value = run.get(f"metrics.{metric}")
            ok = value is not None and isinstance(value, (int, float)) and math.isfinite(value)
            row.append((f"{value:.4f}" if "ssim" in metric and "psnr" not in metric else f"{value:.2f}") if ok else "-")
        rows.append(["" if v in ("nan", "None") else v for v in row])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) if i < 5 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def _expand_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files as given (each checked, so a broken link or a loop is named), and the image files of folders."""
    from training.io import IMAGE_SUFFIXES, check_file

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as exc:
                raise UserError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
            if not found:
                raise UserError(f"{path}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
            files += found
        else:
            check_file(path)
            files.append(path)
    return files


def _device(name: str):
    import torch

    from training.predict import select_device

    device = select_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: CUDA is not available on this machine")
    return device


COMMANDS = [predict, evaluate, runs]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through the w2s command")
