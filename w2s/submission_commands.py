"""`w2s package`: a trained model -> the folder the challenge image carries (checkpoint, config, manifest).

Building, testing and saving the image are `make docker-build`, `make docker-test` and `make docker-save`
(submission/build.py, docker_test.py, save.py). The group in w2s/cli.py registers `COMMANDS` and turns every
`UserError` into one line and exit code 2.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("model")
@click.option("--out", "-o", "out_dir", default="build/submission/context/model", show_default=True,
              type=click.Path(file_okay=False), help="Folder to (re)write; only a previous package is replaced.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI for runs:/ and models:/ MODELs "
              "[default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db].")
@click.option("--allow-2x", is_flag=True, help="Package a jdsr (2x) model anyway: the container then writes outputs "
              "of twice the input's Y and X, which the challenge rejects; for use outside the challenge.")
def package(model: str, out_dir: str, tracking_uri: str, allow_2x: bool) -> None:
    """Package MODEL for the challenge container: a checkpoint, a run folder, runs/latest, or an MLflow URI
    (models:/w2s-unet@champion, models:/w2s-unet/3, runs:/<run id>).

    Writes OUT/best.pt, OUT/config.json and OUT/manifest.json (source, run id, metrics, code versions,
    SHA-256 of every file), which the container verifies before it loads the model.
    """
    from submission.package import describe, package_model

    manifest = package_model(model, out_dir, tracking_uri, allow_2x)
    click.echo(f"packaged into {out_dir}\n{describe(manifest)}")


@click.command("export-bmz")
@click.option("--model", "-m", "model", required=True,
              help="Checkpoint, run folder, runs/latest, runs:/<id>/model or models:/w2s-unet@ALIAS.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The package to write (.zip).")
@click.option("--author", "authors", multiple=True, help="An author's name; repeat for several "
              "[default: w2s-denoise contributors].")
@click.option("--license", "license_id", default="MIT", show_default=True, help="SPDX licence id of the weights.")
@click.option("--name", default="", help="Model name [default: W2S U-Net denoiser <noise level>].")
@click.option("--description", default="", help="One-paragraph description [default: generated].")
@click.option("--sample", type=click.Path(dir_okay=False), default=None,
              help="Image (TIFF/PNG/NPY) for the test input and cover, cropped to 256x256 [default: a synthetic "
              "noisy frame].")
@click.option("--tracking-uri", default="", help="MLflow store holding the run, for its metrics and MLflow URIs.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Run bioimageio.spec validation and bioimageio.core test-model on the written package.")
def export_bmz(model, out, authors, license_id, name, description, sample, tracking_uri, validate) -> None:
    """Export MODEL as a BioImage Model Zoo (bioimage.io) package for Fiji/deepImageJ, napari, ilastik, QuPath."""
    from submission.bioimageio import export_bmz as export, validate_package

    result = export(model, out, authors, license_id, name, description, sample, tracking_uri)
    click.echo(f"wrote {result.path} ({result.bytes / 1e6:.2f} MB) in {result.seconds:.1f} s; normalization "
               f"{result.normalization}; TorchScript vs w2s predict on the test input: max |diff| "
               f"{result.max_test_difference:.2e}")
    if validate:
        click.echo("validating with bioimageio.spec and bioimageio.core test-model (~10 s)...")
        spec_summary, test_summary = validate_package(result.path)
        click.echo(f"bioimageio.spec: {spec_summary.status}; bioimageio.core test-model: {test_summary.status}")
        if test_summary.status != "passed":
            raise click.ClickException(f"{result.path}: bioimageio.core test-model {test_summary.status}:\n"
                                       f"{test_summary.format()}")


COMMANDS = [package, export_bmz]
