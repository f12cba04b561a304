"""`w2s export-bmz`: BioImage Model Zoo packages, checked by bioimageio.spec and bioimageio.core themselves."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from click.testing import CliRunner

from submission.bioimageio import W2S_DOI, export_bmz, validate_package
from submission_fixtures import save_tiny_checkpoint
from training.checkpoint import read_checkpoint, save_checkpoint
from training.config import UNetConfig
from training.model import UNet
from w2s.cli import cli


def _member(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


def _rdf(package: Path) -> dict:
    return yaml.safe_load(_member(package, "rdf.yaml"))


def _npy(package: Path, name: str) -> np.ndarray:
    return np.load(io.BytesIO(_member(package, name)))


def _reproduced(summary) -> dict[str, str]:
    """weights format -> status of bioimageio.core's 'Reproduce test outputs' check."""
    return {d.loc[-1]: d.status for d in summary.details
            if d.name.startswith("Reproduce test outputs") and d.loc and d.loc[0] == "weights"}


def test_exported_package_validates_and_reproduces_w2s_predict(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "run" / "best.pt", run_id="feedc0ffee")
    package = tmp_path / "out" / "model.zip"
    result = CliRunner().invoke(cli, ["export-bmz", "--model", str(checkpoint), "--out", str(package),
                                      "--author", "Ada Lovelace", "--author", "Alan Turing", "--license", "CC-BY-4.0",
                                      "--name", "Tiny W2S test denoiser", "--no-validate"])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and package.is_file()
    assert sorted(p.name for p in package.parent.iterdir()) == ["model.zip"]  # no partial file left behind

    spec_summary, tested = validate_package(package)
    assert spec_summary.status in ("valid-format", "passed"), spec_summary.format()
    assert tested.status == "passed", tested.format()
    assert _reproduced(tested) == {"pytorch_state_dict": "passed", "torchscript": "passed"}

    rdf = _rdf(package)
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Alan Turing"]
    assert rdf["license"] == "CC-BY-4.0" and rdf["name"] == "Tiny W2S test denoiser"
    assert rdf["cite"][0]["doi"] == W2S_DOI and "W2S" in rdf["cite"][0]["text"]
    assert set(rdf["weights"]) == {"torchscript", "pytorch_state_dict"}
    assert [step["id"] for step in rdf["inputs"][0]["preprocessing"]] == ["ensure_dtype"]  # percentile: baked in

    # the expected output is exactly what `w2s predict` writes for the test input
    test_input = _npy(package, rdf["inputs"][0]["test_tensor"]["source"])
    expected = _npy(package, rdf["outputs"][0]["test_tensor"]["source"])
    np.save(tmp_path / "test_input.npy", test_input[0, 0])
    predicted = CliRunner().invoke(cli, ["predict", str(tmp_path / "test_input.npy"), "--model", str(checkpoint),
                                         "--out", str(tmp_path / "predicted"), "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    np.testing.assert_array_equal(expected[0, 0], tifffile.imread(tmp_path / "predicted" / "test_input.tif"))
    assert np.abs(expected - test_input).mean() > 1e-3  # the model does something, so reproducing it means something

    readme = _member(package, rdf["documentation"]["source"]).decode()
    assert "avg1" in readme and "feedc0ffee" in readme and "| val_psnr | 30.5000 |" in readme
    assert "W2S: Microscopy Data with Joint Denoising and Super-Resolution" in readme
    cover = _member(package, rdf["covers"][0]["source"])
    assert cover.startswith(b"\x89PNG")


@pytest.mark.slow  # ~18 s: the non-default normalization; the default path is checked by the fast tests
def test_meanstd_normalization_becomes_pre_and_postprocessing_and_mlflow_metrics_reach_the_readme(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("bmz-test"))
    client.log_metric(run.info.run_id, "test_psnr", 27.25)
    checkpoint = read_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt", run_id=run.info.run_id))
    checkpoint["normalization"].update(method="meanstd", mean=180.0, std=40.0)
    save_checkpoint(tmp_path / "meanstd.pt", {k: v for k, v in checkpoint.items() if k != "format"})

    result = export_bmz(tmp_path / "meanstd.pt", tmp_path / "meanstd.zip", tracking_uri=uri)
    assert result.normalization == "pre/postprocessing" and result.max_test_difference < 1e-3

    rdf = _rdf(result.path)
    pre, post = rdf["inputs"][0]["preprocessing"], rdf["outputs"][0]["postprocessing"]
    assert {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 180.0, "std": 40.0}} in pre, pre
    assert {"id": "scale_linear", "kwargs": {"gain": 40.0, "offset": 180.0}} in post, post
    assert "| test_psnr | 27.2500 |" in _member(result.path, rdf["documentation"]["source"]).decode()

    spec_summary, tested = validate_package(result.path)
    assert spec_summary.status in ("valid-format", "passed") and tested.status == "passed", tested.format()
    assert _reproduced(tested) == {"pytorch_state_dict": "passed", "torchscript": "passed"}


@pytest.mark.slow  # ~16 s plus the shared tiny training; validates a second package end to end
def test_a_run_trained_by_w2s_train_exports_from_its_mlflow_uri_and_validates(tmp_path, tiny_training):
    """The trainer's own checkpoint, fetched as `runs:/<id>` from its MLflow store, as `w2s predict` takes it."""
    run_id = tiny_training.full_run_id
    package = tmp_path / "trained.zip"
    result = CliRunner().invoke(cli, ["export-bmz", "--model", f"runs:/{run_id}", "--out", str(package),
                                      "--tracking-uri", tiny_training.tracking_uri])
    assert result.exit_code == 0, result.output
    assert "bioimageio.core test-model: passed" in result.output

    rdf = _rdf(package)
    readme = _member(package, rdf["documentation"]["source"]).decode()
    best = read_checkpoint(tiny_training.full_dir / "best.pt")["best_metrics"]
    assert run_id in readme and f"| val_psnr | {best['val_psnr']:.4f} |" in readme
    assert "| val_noisy_psnr |" in readme  # the noisy input's score, the bar the model had to clear
    assert rdf["name"] == "W2S U-Net denoiser avg1" and rdf["authors"] == [{"name": "w2s-denoise contributors"}]


def test_missing_model_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["export-bmz", "--model", str(tmp_path / "nope.pt"), "--out",
                                      str(tmp_path / "m.zip")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"w2s: error: {tmp_path / 'nope.pt'}: model checkpoint not found"]
    assert not (tmp_path / "m.zip").exists()


def test_a_model_the_package_cannot_describe_is_refused_with_one_line(tmp_path):
    checkpoint = read_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt"))
    torch.manual_seed(0)
    two = UNet(UNetConfig(depth=2, base_channels=4, in_channels=2, out_channels=2))
    checkpoint["config"]["model"].update(in_channels=2, out_channels=2)
    checkpoint["model_state"] = two.state_dict()
    save_checkpoint(tmp_path / "two.pt", {k: v for k, v in checkpoint.items() if k != "format"})

    result = CliRunner().invoke(cli, ["export-bmz", "--model", str(tmp_path / "two.pt"), "--out",
                                      str(tmp_path / "m.zip")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "two.pt: cannot export a 2->2 channel model" in lines[0]
    assert not (tmp_path / "m.zip").exists()


def test_output_must_be_a_zip(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    result = CliRunner().invoke(cli, ["export-bmz", "--model", str(checkpoint), "--out", str(tmp_path / "m.tar")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "ending in .zip" in result.output
