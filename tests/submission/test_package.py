"""`w2s package`: checkpoint or MLflow model -> checkpoint + config + manifest with checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from submission.inference import MANIFEST_FORMAT, verify_model_dir
from submission.package import package_model
from submission_fixtures import save_tiny_checkpoint
from training.errors import UserError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_a_run_folder(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "runs" / "r1" / "best.pt", run_id="abc123")
    (tmp_path / "runs" / "latest").write_text(str(tmp_path / "runs" / "r1"))
    manifest = package_model(tmp_path / "runs" / "latest", tmp_path / "model")

    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["best.pt", "config.json", "manifest.json"]
    assert (tmp_path / "model" / "best.pt").read_bytes() == checkpoint.read_bytes()  # byte for byte
    assert json.loads((tmp_path / "model" / "manifest.json").read_text()) == manifest
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["run_id"] == "abc123"
    assert manifest["source"] == str(checkpoint.resolve())
    assert manifest["metrics"]["val_psnr"] == pytest.approx(30.5)
    assert manifest["code_version"]["training"] == "test-code" and manifest["code_version"]["packaging"]
    assert manifest["files"]["best.pt"] == {"sha256": _sha(checkpoint), "bytes": checkpoint.stat().st_size}
    assert json.loads((tmp_path / "model" / "config.json").read_text())["model"]["depth"] == 2
    assert verify_model_dir(tmp_path / "model") == manifest


def test_repackaging_replaces_the_previous_package_but_never_a_foreign_folder(tmp_path):
    first = save_tiny_checkpoint(tmp_path / "a.pt", run_id="first")
    second = save_tiny_checkpoint(tmp_path / "b.pt", run_id="second", seed=1)
    package_model(first, tmp_path / "model")
    assert package_model(second, tmp_path / "model")["run_id"] == "second"

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a model package"):
        package_model(first, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_bad_model_leaves_the_previous_package_alone(tmp_path):
    package_model(save_tiny_checkpoint(tmp_path / "a.pt"), tmp_path / "model")
    before = (tmp_path / "model" / "manifest.json").read_text()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        package_model(tmp_path / "junk.pt", tmp_path / "model")
    with pytest.raises(UserError, match="not found"):
        package_model(tmp_path / "missing.pt", tmp_path / "model")
    with pytest.raises(UserError, match="no model given"):
        package_model("", tmp_path / "model")
    assert (tmp_path / "model" / "manifest.json").read_text() == before


def test_package_from_mlflow_run_and_registered_model_uris(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from training.predict import mlflow_uri

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root ./mlruns
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    with mlflow_uri(tracking_uri):  # and put back whatever MLflow pointed at before
        # set_experiment: MLflow caches the active experiment id per process, and an earlier test's
        # id need not exist in this fresh store.
        mlflow.set_experiment("package-test")
        with mlflow.start_run() as run:
            run_id = run.info.run_id
            checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", run_id=run_id)
            mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        client.create_registered_model("w2s-unet")
        version = client.create_model_version("w2s-unet", f"{run.info.artifact_uri}/checkpoints", run_id=run_id)
        client.set_registered_model_alias("w2s-unet", "champion", version.version)

    by_run = package_model(f"runs:/{run_id}", tmp_path / "m1", tracking_uri)
    assert by_run["run_id"] == run_id and by_run["mlflow"]["run_id"] == run_id
    assert by_run["files"]["best.pt"]["sha256"] == _sha(checkpoint)

    by_alias = package_model("models:/w2s-unet@champion", tmp_path / "m2", tracking_uri)
    assert by_alias["source"] == "models:/w2s-unet@champion"
    assert by_alias["mlflow"]["registered_model"] == "w2s-unet"
    assert by_alias["mlflow"]["version"] == str(version.version) and by_alias["mlflow"]["alias"] == "champion"
    assert by_alias["files"]["best.pt"]["sha256"] == _sha(checkpoint)

    with pytest.raises(UserError, match="cannot fetch"):
        package_model("models:/w2s-unet@nobody", tmp_path / "m3", tracking_uri)


def test_cli_package_one_line_errors(tmp_path, run_cli):
    result = run_cli(["package", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "model")])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    result = run_cli(["package", str(save_tiny_checkpoint(tmp_path / "a.pt")), "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert "sha256:" in result.output and (tmp_path / "model" / "manifest.json").is_file()
