"""`--task jdsr` end to end through the CLI: a short training run on the demo generator's data (with its 2x
SIM targets) gives an MLflow run and a checkpoint; evaluate scores it at SIM resolution with the bicubic and
denoise-then-upsample baselines; predict doubles Y and X; the challenge packaging refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from conftest import invoke, tiny_train_args
from training.data.synthetic import SyntheticSpec, ensure_synthetic_w2s

DEMO = SyntheticSpec(fovs=(1, 2, 71, 81), channels=2, frames=4, size=32, seed=3)


@pytest.fixture(scope="module")
def jdsr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jdsr")
    data = ensure_synthetic_w2s(tmp / "demo", DEMO, progress=False)
    result = invoke(tiny_train_args(tmp, data, "--task", "jdsr", "--val-fovs", "071", epochs=2, steps=2))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("best checkpoint:"))
    return tmp, Path(line.split(":", 1)[1].strip()).parent


def test_training_writes_a_2x_checkpoint_and_an_mlflow_run(jdsr_run):
    from mlflow import MlflowClient

    tmp, run_dir = jdsr_run
    checkpoint = torch.load(run_dir / "best.pt", weights_only=True)
    assert checkpoint["config"]["task"] == "jdsr" and checkpoint["config"]["model"]["sr_head"] == "shuffle"
    assert checkpoint["normalization"]["target"] == "fit"  # auto: SIM units relate to the input image by image
    run = MlflowClient(f"sqlite:///{tmp}/mlflow.db").get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.data.params["task"] == "jdsr" and run.data.params["model.sr_head"] == "shuffle"
    assert {"val_psnr", "val_si_psnr", "val_ssim", "best_val_psnr", "noisy_si_psnr"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp}/mlflow.db").list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config.json", "loss_curve.png", "panels"} <= artifacts


def test_evaluate_scores_at_sim_resolution_beside_both_baselines_and_logs_to_mlflow(jdsr_run):
    from mlflow import MlflowClient

    tmp, run_dir = jdsr_run
    out = tmp / "eval"
    result = invoke(["evaluate", "--model", str(run_dir), "--baselines", "gaussian", "--tune-images", "1",
                     "--out", str(out), "--quiet", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["split"] == "test" and summary["n_images_scored"] == 2
    methods = summary["methods"]
    assert list(methods) == ["noisy input", "U-Net", "Gaussian filter + bicubic 2x"]
    assert methods["noisy input"]["upsampled"] == "bicubic 2x"
    for name in methods:
        assert set(methods[name]["mean"]) == {"psnr", "si_psnr", "ssim", "ms_ssim"}
    run = MlflowClient(f"sqlite:///{tmp}/mlflow.db").get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert {"test_psnr", "test_si_psnr", "test_ssim", "test_ms_ssim"} <= set(run.data.metrics)
    assert run.data.metrics["test_si_psnr"] == pytest.approx(methods["U-Net"]["mean"]["si_psnr"])


def test_predict_doubles_y_and_x_of_images_and_stacks(jdsr_run, tmp_path):
    _, run_dir = jdsr_run
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "image.tif", rng.integers(100, 400, (20, 28)).astype(np.uint16))
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(100, 400, (2, 3, 24, 16)).astype(np.uint16))
    result = invoke(["predict", str(tmp_path / "image.tif"), str(tmp_path / "stack.tif"), "--model", str(run_dir),
                     "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert tifffile.imread(tmp_path / "out" / "image.tif").shape == (40, 56)
    assert tifffile.imread(tmp_path / "out" / "stack.tif").shape == (2, 3, 48, 32)


def test_the_challenge_packaging_refuses_a_jdsr_model_in_one_line(jdsr_run, tmp_path):
    _, run_dir = jdsr_run
    result = invoke(["package", str(run_dir), "--out", str(tmp_path / "package")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"w2s: error: {run_dir / 'best.pt'}: a jdsr model outputs 2x")
    assert "same-size" in lines[0]
    assert not (tmp_path / "package").exists()


def test_the_bioimage_model_zoo_export_refuses_a_jdsr_model_in_one_line(jdsr_run, tmp_path):
    _, run_dir = jdsr_run
    result = invoke(["export-bmz", "--model", str(run_dir), "--out", str(tmp_path / "model.zip"), "--no-validate"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "maps (1, 1," in lines[0] and not (tmp_path / "model.zip").exists()


def test_the_container_serves_a_jdsr_model_packaged_with_allow_2x(jdsr_run, tmp_path):
    """Outside the challenge: `--allow-2x` packages it, and the container path writes 2x outputs."""
    import numpy as np
    import tifffile

    from submission import inference

    _, run_dir = jdsr_run
    package = tmp_path / "package"
    result = invoke(["package", str(run_dir), "--out", str(package), "--allow-2x"])
    assert result.exit_code == 0, result.output
    inputs = tmp_path / "input" / "images" / "image-stack-structured-noise"
    inputs.mkdir(parents=True)
    stack = np.random.default_rng(0).poisson(100.0, size=(2, 24, 40)).astype(np.uint16)
    tifffile.imwrite(inputs / "case.tif", stack)
    assert inference.self_check(package) == 0
    assert inference.run(tmp_path / "input", tmp_path / "output", package, device_name="cpu") == 0
    output = tifffile.imread(tmp_path / "output" / "images" / "image-stack-denoised" / "case.tif")
    assert output.shape == (2, 48, 80) and output.dtype == np.float32 and np.isfinite(output).all()
