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
def package(model: str, out_dir: str, tracking_uri: str) -> None:
    """Package MODEL for the challenge container: a checkpoint, a run folder, runs/latest, or an MLflow URI
    (models:/w2s-unet@champion, models:/w2s-unet/3, runs:/<run id>).

    Writes OUT/best.pt, OUT/config.json and OUT/manifest.json (source, run id, metrics, code versions,
    SHA-256 of every file), which the container verifies before it loads the model.
    """
    from submission.package import describe, package_model

    manifest = package_model(model, out_dir, tracking_uri)
    click.echo(f"packaged into {out_dir}\n{describe(manifest)}")


COMMANDS = [package]
