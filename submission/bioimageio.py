"""`w2s export-bmz`: a trained model -> a BioImage Model Zoo (bioimage.io) package, checked by the format's tools.

Fiji (deepImageJ), napari, ilastik and QuPath read these zip packages. One holds `rdf.yaml` (model
description 0.5), TorchScript weights and a PyTorch state dict with a self-contained architecture file,
a test input and the output `w2s predict` makes of it (the same `training.predict.predict_stack`), a
cover (noisy | denoised), and a README with training data, noise level, metrics and the W2S citation.

Normalization: a dataset z-score (`meanstd`) is written as the format's pre/postprocessing; the default
per-image percentile normalization is baked into the exported module (see submission/bmz_net.py for why).

Packaging and validation need no network: every file is local (so `perform_io_checks`, left on, only hashes
them), the citation is a DOI (checked by pattern, not resolved) and no author carries a GitHub user name
(which the spec would look up online).
"""

from __future__ import annotations

import inspect
import os
import tempfile
import textwrap
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import UserError

W2S_CITATION = ("Zhou, R., El Helou, M., Sage, D., Laroche, T., Seitz, A., Süsstrunk, S.: W2S: Microscopy Data with "
                "Joint Denoising and Super-Resolution for Widefield to SIM Mapping. ECCV Workshops 2020")
W2S_DOI = "10.48550/arXiv.2003.05961"
DEFAULT_AUTHOR = "w2s-denoise contributors"
DEFAULT_LICENSE = "MIT"
SAMPLE_SIZE = 256  # the test image: one tile of `w2s predict`, so the package's whole-image pass is its output
ARCHITECTURE_FILE = "w2s_unet.py"
TOLERANCE = 1e-4  # relative and absolute, on outputs in the input's units; measured differences are ~1e-6


@dataclass
class ExportResult:
    path: Path
    bytes: int
    seconds: float
    normalization: str  # "baked" or "pre/postprocessing"
    max_test_difference: float  # TorchScript vs `w2s predict` on the test input, input units


def export_bmz(spec: str | Path, out: str | Path, authors: tuple[str, ...] = (), license_id: str = DEFAULT_LICENSE,
               name: str = "", description: str = "", sample: str | Path | None = None,
               tracking_uri: str = "") -> ExportResult:
    """Write the package for MODEL `spec` (what `w2s predict --model` takes) to the zip `out`, atomically."""
    start = time.perf_counter()
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise UserError("bioimageio.spec is not installed: pip install 'w2s-denoise[bmz]' (or .[dev])") from None
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise UserError(f"{out}: the package is a zip file; give a path ending in .zip")
    from training.predict import resolve_model

    loaded = resolve_model(spec, tracking_uri, "cpu")
    check_expressible(loaded, spec)
    image = _test_image(sample, loaded.config.model.depth)
    with tempfile.TemporaryDirectory(prefix="w2s-bmz-") as tmp:
        folder = Path(tmp)
        descr, difference = _describe(loaded, str(spec), image, folder, authors or (DEFAULT_AUTHOR,), license_id,
                                      name, description, tracking_uri)
        from bioimageio.spec import save_bioimageio_package

        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial.zip")
        try:
            save_bioimageio_package(descr, output_path=partial)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return ExportResult(out, out.stat().st_size, time.perf_counter() - start,
                        "baked" if loaded.normalization.method == "percentile" else "pre/postprocessing", difference)


def check_expressible(loaded, spec: str | Path) -> None:
    """Refuse what this exporter cannot describe, naming the model and the reason."""
    import torch

    config = loaded.config.model
    if (config.in_channels, config.out_channels) != (1, 1):
        raise UserError(f"{spec}: cannot export a {config.in_channels}->{config.out_channels} channel model; the "
                        "package describes single-channel denoisers (1 channel in, 1 out)")
    if loaded.normalization.method not in ("percentile", "meanstd"):
        raise UserError(f"{spec}: normalization '{loaded.normalization.method}' has no bioimage.io equivalent "
                        "(supported: percentile, meanstd)")
    probe = torch.zeros(1, 1, 2**config.depth * 2, 2**config.depth * 3)
    with torch.no_grad():
        shape = tuple(loaded.model(probe).shape)
    if shape != tuple(probe.shape):
        raise UserError(f"{spec}: the model maps {tuple(probe.shape)} to {shape}; the package describes "
                        "same-size denoisers only")


def validate_package(path: str | Path) -> tuple[Any, Any]:
    """The format's own checks: (spec validation summary, bioimageio.core test-model summary)."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    descr = load_description(str(path), perform_io_checks=True)
    tested = test_model(str(path), devices=["cpu"], determinism="full")
    return descr.validation_summary, tested


def architecture_source() -> str:
    """training/model.py and submission/bmz_net.py as one file, with the U-Net config class written inline."""
    import submission.bmz_net as net_module
    import training.model as model_module
    from training.config import UNetConfig

    defaults = {f.name: f.default for f in fields(UNetConfig)}
    config_class = textwrap.dedent(f'''
        from types import SimpleNamespace


        class UNetConfig(SimpleNamespace):
            """training.config.UNetConfig: the U-Net's shape (a plain namespace: dataclasses need a registered module)."""

            def __init__(self, **values):
                super().__init__(**{{**{defaults!r}, **values}})
        ''')
    model_source = inspect.getsource(model_module).replace("from training.config import UNetConfig\n", config_class)
    builder = textwrap.dedent('''

        def build(model: dict, percentile: bool, low: float, high: float) -> NormalizedDenoiser:
            """The exported network: `model` holds the U-Net config (training.config.UNetConfig)."""
            return NormalizedDenoiser(UNet(UNetConfig(**model)), percentile, low, high)
        ''')
    model_source = model_source.replace(model_module.__doc__, "W2S U-Net denoiser for bioimage.io, generated by "
                                        "`w2s export-bmz` from training/model.py and submission/bmz_net.py.", 1)
    return model_source + "\n\n" + inspect.getsource(net_module) + builder


# ------------------------------------------------------------------------------------------------ internals


def _describe(loaded, source: str, image: np.ndarray, folder: Path, authors, license_id: str, name: str,
              description: str, tracking_uri: str):
    import tifffile
    import torch
    from bioimageio.spec.model import v0_5 as bmz

    from submission.bmz_net import NormalizedDenoiser
    from training.predict import predict_stack
    from training.visualize import display_range, panel

    config, normalization = loaded.config, loaded.normalization
    percentile = normalization.method == "percentile"
    exported = NormalizedDenoiser(loaded.model, percentile, normalization.low, normalization.high).eval()

    test_input = image.astype(np.float32)[None, None]
    expected = predict_stack(loaded.model, normalization, image, amp=False)[None, None]  # = `w2s predict`
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", expected)
    tifffile.imwrite(folder / "sample_input.tif", test_input[0, 0])
    tifffile.imwrite(folder / "sample_output.tif", expected[0, 0])
    torch.jit.script(exported).save(str(folder / "weights_torchscript.pt"))
    torch.save({f"net.{k}": v for k, v in loaded.model.state_dict().items()}, folder / "weights_state_dict.pt")
    (folder / ARCHITECTURE_FILE).write_text(architecture_source())
    scripted = torch.jit.load(str(folder / "weights_torchscript.pt"))
    with torch.no_grad():
        x = torch.from_numpy(test_input)
        if not percentile:
            x = (x - normalization.mean) / max(normalization.std, 1e-6)
        reproduced = scripted(x).numpy()
        if not percentile:
            reproduced = reproduced * normalization.std + normalization.mean
    difference = float(np.abs(reproduced - expected).max())

    value_range = display_range(expected[0, 0])
    cover = panel([image, expected[0, 0]], [value_range, value_range])
    from skimage.io import imsave

    imsave(folder / "cover.png", cover, check_contrast=False)
    metrics = _metrics(loaded.checkpoint, tracking_uri)
    (folder / "README.md").write_text(_readme(loaded, source, metrics, percentile))

    depth = config.model.depth
    size = bmz.ParameterizedSize(min=2**depth, step=2**depth)
    preprocessing: list[Any] = [bmz.EnsureDtypeDescr(kwargs=bmz.EnsureDtypeKwargs(dtype="float32"))]
    postprocessing: list[Any] = []
    if not percentile:
        preprocessing.append(bmz.FixedZeroMeanUnitVarianceDescr(kwargs=bmz.FixedZeroMeanUnitVarianceKwargs(
            mean=normalization.mean, std=max(normalization.std, 1e-6))))
        postprocessing.append(bmz.ScaleLinearDescr(kwargs=bmz.ScaleLinearKwargs(
            gain=normalization.std, offset=normalization.mean)))
    input_id, output_id = bmz.TensorId("raw"), bmz.TensorId("denoised")
    inputs = [bmz.InputTensorDescr(
        id=input_id, description="widefield fluorescence image, any intensity units (2-D, one channel)",
        axes=[bmz.BatchAxis(), bmz.ChannelAxis(channel_names=[bmz.Identifier("channel0")]),
              bmz.SpaceInputAxis(id=bmz.AxisId("y"), size=size), bmz.SpaceInputAxis(id=bmz.AxisId("x"), size=size)],
        test_tensor=bmz.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=bmz.FileDescr(source=folder / "sample_input.tif"), preprocessing=preprocessing)]
    outputs = [bmz.OutputTensorDescr(
        id=output_id, description="denoised image in the input's intensity units",
        axes=[bmz.BatchAxis(), bmz.ChannelAxis(channel_names=[bmz.Identifier("channel0")]),
              bmz.SpaceOutputAxis(id=bmz.AxisId("y"), size=bmz.SizeReference(tensor_id=input_id, axis_id=bmz.AxisId("y"))),
              bmz.SpaceOutputAxis(id=bmz.AxisId("x"), size=bmz.SizeReference(tensor_id=input_id, axis_id=bmz.AxisId("x")))],
        test_tensor=bmz.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=bmz.FileDescr(source=folder / "sample_output.tif"), postprocessing=postprocessing)]
    torch_version = bmz.Version(torch.__version__.split("+")[0])
    weights = bmz.WeightsDescr(
        pytorch_state_dict=bmz.PytorchStateDictWeightsDescr(
            source=folder / "weights_state_dict.pt", pytorch_version=torch_version,
            architecture=bmz.ArchitectureFromFileDescr(
                source=folder / ARCHITECTURE_FILE, callable=bmz.Identifier("build"),
                kwargs={"model": _plain(config.model), "percentile": percentile,
                        "low": float(normalization.low), "high": float(normalization.high)})),
        torchscript=bmz.TorchscriptWeightsDescr(source=folder / "weights_torchscript.pt",
                                                pytorch_version=torch_version, parent="pytorch_state_dict"))
    noise = loaded.checkpoint.get("noise_level") or config.noise_level
    descr = bmz.ModelDescr(
        name=name or f"W2S U-Net denoiser {noise}",
        description=description or (f"U-Net denoiser for widefield fluorescence microscopy, trained on W2S-style "
                                     f"{noise} inputs against avg400 targets with the w2s-denoise harness."),
        authors=[bmz.Author(name=author) for author in authors],
        cite=[bmz.CiteEntry(text=W2S_CITATION, doi=bmz.Doi(W2S_DOI))],
        license=bmz.LicenseId(license_id),
        documentation=bmz.FileDescr(source=folder / "README.md"),
        covers=[bmz.FileDescr(source=folder / "cover.png")],
        tags=["denoising", "fluorescence-light-microscopy", "2d", "unet", "pytorch", "w2s"],
        inputs=inputs, outputs=outputs, weights=weights,
        config=bmz.Config(bioimageio=bmz.BioimageioConfig(reproducibility_tolerance=[bmz.ReproducibilityTolerance(
            relative_tolerance=TOLERANCE, absolute_tolerance=TOLERANCE, mismatched_elements_per_million=0)])),
    )
    return descr, difference


def _test_image(sample: str | Path | None, depth: int) -> np.ndarray:
    """The first 2-D slice of `sample`, centre-cropped to at most one tile and to the U-Net grid; else a synthetic
    noisy frame from the demo data generator (uint16 counts, as the raw W2S layout has)."""
    multiple = 2**depth
    if sample is None:
        from training.data.synthetic import SyntheticSpec, fluorescence_scene, image_stack

        spec = SyntheticSpec(size=SAMPLE_SIZE, frames=1)
        rng = np.random.default_rng([spec.seed, 0])
        image = image_stack(rng, fluorescence_scene(rng, spec)[1], spec)[0]
    else:
        from training.io import check_finite, read_image

        image = read_image(sample)
        check_finite(image, sample)
        image = image.reshape(-1, *image.shape[-2:])[0]
    height, width = (min(n, SAMPLE_SIZE) // multiple * multiple for n in image.shape)
    if not (height and width):
        raise UserError(f"{sample}: the test image must be at least {multiple}x{multiple} pixels for this model "
                        f"(got {image.shape[0]}x{image.shape[1]})")
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2  # the centre: edges are often dark
    return np.asarray(image[top:top + height, left:left + width], dtype=np.float32)


def _metrics(checkpoint: dict[str, Any], tracking_uri: str) -> dict[str, float]:
    """Validation metrics stored in the checkpoint, plus the run's metrics from MLflow where it is reachable."""
    metrics = {(k if k.startswith("val_") else f"val_{k}"): float(v)
               for k, v in (checkpoint.get("best_metrics") or {}).items()}
    history = checkpoint.get("history") or [{}]
    metrics.update({f"val_{k}": float(v) for k, v in history[0].items() if k.startswith("noisy_")})
    run_id = checkpoint.get("mlflow_run_id")
    uri = tracking_uri or checkpoint.get("tracking_uri") or (checkpoint.get("config") or {}).get("tracking_uri") or ""
    if not run_id or not uri:
        return metrics
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return metrics  # opening a missing SQLite store would create an empty one
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except (MlflowException, OSError):
        return metrics
    metrics.update({k: float(v) for k, v in run.data.metrics.items() if k.startswith("test_")})
    return metrics


def _readme(loaded, source: str, metrics: dict[str, float], percentile: bool) -> str:
    config, checkpoint, normalization = loaded.config, loaded.checkpoint, loaded.normalization
    noise = checkpoint.get("noise_level") or config.noise_level
    data = Path(config.data).name if config.data else "the synthetic W2S-style demo data (training.data.synthetic)"
    lines = [
        f"# W2S U-Net denoiser ({noise})", "",
        "A 2-D U-Net that denoises widefield fluorescence microscopy images, trained and exported with the "
        "w2s-denoise harness (`w2s train`, `w2s export-bmz`).", "",
        "## Training", "",
        f"- data: {data} (layout `{checkpoint.get('data_layout', config.layout)}`, fingerprint "
        f"`{checkpoint.get('data_fingerprint', 'unknown')}`)",
        f"- noise level: {noise} input (W2S: {noise[3:] if noise.startswith('avg') else '?'} averaged frame(s)) "
        "-> avg400 target",
        f"- model: depth {config.model.depth}, {config.model.base_channels} base channels, "
        f"batch norm {config.model.batch_norm}, residual {config.model.residual}, {config.model.upsample} upsampling",
        f"- {config.epochs} epochs x {config.steps_per_epoch} steps, batch {config.batch_size} of "
        f"{config.patch_size}^2 patches, {config.loss} loss, lr {config.lr}; best epoch {checkpoint.get('best_epoch')}",
        f"- MLflow run: `{checkpoint.get('mlflow_run_id') or 'none'}`; code version "
        f"`{checkpoint.get('code_version', 'unknown')}`; exported from `{Path(source).name}`", "",
        "## Metrics", "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
        lines += ["", "`val_*`: best epoch on the run's validation split (`val_noisy_*`: the noisy input itself); "
                  "`test_*`: `w2s evaluate` on the held-out split, where it was run."]
    else:
        lines.append("No metrics were recorded with this checkpoint.")
    if percentile:
        how = (f"each image is scaled by its own {normalization.low}th-{normalization.high}th percentiles before the "
               "network and scaled back with the same numbers after it. The format cannot express that inverse "
               "(no postprocessing rescales an output by the input's percentiles), so both steps are inside the "
               "weights; the description lists no normalization. Tools that tile large images normalize each "
               "tile on its own, which differs slightly from `w2s predict` (whole-image statistics).")
    else:
        how = (f"a fixed z-score (mean {normalization.mean:.6g}, std {normalization.std:.6g}) before the network and "
               "its inverse after it, written as the description's pre- and postprocessing.")
    lines += ["", "## Input and output", "",
              "One 2-D single-channel image in any intensity units; the output has the same size and units. "
              f"Normalization: {how}", "",
              "## Validation", "",
              "The test output (`test_output.npy`, also `sample_output.tif`) is what `w2s predict` writes for the "
              "test input; `bioimageio.core`'s test-model reproduces it from both weight formats "
              f"(tolerance {TOLERANCE:g} relative and absolute, in the input's units). Quantitative validation: "
              "see Metrics.", "",
              "## Citation", "", W2S_CITATION + f". doi:{W2S_DOI}", ""]
    return "\n".join(lines)


def _plain(config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}
