"""`w2s train --task n2v` end to end: paired data (targets ignored for training, scored in validation),
noisy-only TIFF stacks (validation reports the blind-spot loss only), then the unchanged evaluate / predict /
container paths on the checkpoints it writes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import REPO_ROOT, invoke, tiny_train_args, written_outputs
from training.data.layouts import detect_layout, discover_pairs


def _run_dir(output: str) -> Path:
    line = next(line for line in output.splitlines() if line.startswith("best checkpoint:"))
    return Path(line.split(":", 1)[1].strip()).parent


def _write_noisy(root: Path, seed: int = 0) -> Path:
    """Noisy-only stacks in nested folders: (N, C, Y, X), (C, Y, X) and a plain (Y, X) image."""
    rng = np.random.default_rng(seed)
    (root / "a" / "deep").mkdir(parents=True)
    tifffile.imwrite(root / "a" / "deep" / "cells.tif", rng.integers(90, 460, (2, 2, 32, 40)).astype(np.int16))
    tifffile.imwrite(root / "a" / "more.tiff", rng.integers(0, 4000, (3, 32, 32)).astype(np.uint16))
    tifffile.imwrite(root / "plain.tif", rng.random((40, 36)).astype(np.float32))
    return root


def test_noisy_layout_is_detected_and_split_into_2d_slices(tmp_path):
    root = _write_noisy(tmp_path / "noisy")
    assert detect_layout(root) == "noisy"
    layout, sources = discover_pairs(root, "auto", "avg1")
    assert layout == "noisy" and all(s.target_path is None for s in sources)
    assert [s.name for s in sources] == ["a/deep/cells[0]", "a/deep/cells[1]", "a/deep/cells[2]", "a/deep/cells[3]",
                                         "a/more[0]", "a/more[1]", "a/more[2]", "plain"]


def test_n2v_on_8bit_pairs_logs_an_mlflow_run_and_evaluates_through_the_usual_path(tmp_path, make_8bit):
    from mlflow import MlflowClient

    data = make_8bit(tmp_path / "data", shape=(40, 48))
    result = invoke(tiny_train_args(tmp_path, data, "--task", "n2v", "--val-fovs", "071", "--set", "n2v_fraction=0.05",
                                    epochs=2, steps=3))
    assert result.exit_code == 0, result.output
    run_dir = _run_dir(result.output)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.data.params["task"] == "n2v" and run.data.params["n2v_fraction"] == "0.05"
    assert {"train_loss", "val_loss", "val_psnr", "val_si_psnr", "val_ssim", "best_val_loss"} <= set(run.data.metrics)
    history = json.loads(json.dumps(__import__("torch").load(run_dir / "best.pt", weights_only=True)["history"]))
    best_epoch = int(run.data.tags["best_epoch"])
    assert history[best_epoch - 1]["val_loss"] == min(h["val_loss"] for h in history)  # picked without targets

    out = tmp_path / "eval"
    evaluated = invoke(["evaluate", "--model", str(run_dir), "--split", "val", "--baselines", "none",
                        "--out", str(out), "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((out / "summary.json").read_text())
    # a 40x48 image is one tile, so the evaluator's tiled prediction is the trainer's whole-image validation
    scores = summary["methods"]["U-Net"]["mean"]
    assert scores["si_psnr"] == pytest.approx(run.data.metrics["best_val_si_psnr"], abs=1e-3)
    assert scores["psnr"] == pytest.approx(run.data.metrics["best_val_psnr"], abs=1e-3)


def test_n2v_trains_on_noisy_only_stacks_predicts_and_is_not_evaluated(tmp_path):
    data = _write_noisy(tmp_path / "noisy")
    result = invoke(tiny_train_args(tmp_path, data, "--task", "n2v", epochs=1, steps=2))
    assert result.exit_code == 0, result.output
    assert "(no targets)" in result.output
    run_dir = _run_dir(result.output)
    payload = __import__("torch").load(run_dir / "best.pt", weights_only=True)
    assert payload["data_layout"] == "noisy" and set(payload["best_metrics"]) == {"val_loss"}
    assert np.isfinite(payload["best_metrics"]["val_loss"])

    predicted = invoke(["predict", str(data / "a" / "deep" / "cells.tif"), "--model", str(run_dir / "best.pt"),
                        "--out", str(tmp_path / "out"), "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    output = tifffile.imread(tmp_path / "out" / "cells.tif")
    assert output.shape == (2, 2, 32, 40) and np.isfinite(output).all()

    # the challenge container's entrypoint serves it as any model, with w2s predict's output
    from submission.inference import OUTPUT_SUBDIR, main
    from submission.package import package_model

    package_model(run_dir / "best.pt", tmp_path / "model")
    case = tmp_path / "in" / "images" / "image-stack-unstructured-noise" / "cells.tif"
    case.parent.mkdir(parents=True)
    case.write_bytes((data / "a" / "deep" / "cells.tif").read_bytes())
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "container"), "--model-dir",
                 str(tmp_path / "model"), "--device", "cpu"]) == 0
    served = tifffile.imread(tmp_path / "container" / OUTPUT_SUBDIR / "cells.tif")
    np.testing.assert_allclose(served, output, rtol=1e-5, atol=1e-5 * float(np.abs(output).max()))

    refused = invoke(["evaluate", "--model", str(run_dir), "--data", str(data), "--baselines", "none", "--quiet"])
    assert refused.exit_code == 2 and "no targets to score" in refused.output, refused.output


@pytest.mark.parametrize("args, message", [
    (["--task", "denoise"], "no targets to train 'denoise' on (use --task n2v)"),
    (["--task", "n2v", "--set", "n2v_fraction=0.5"], "invalid config value n2v_fraction=0.5"),
])
def test_bad_n2v_requests_are_one_line_errors_that_write_nothing(tmp_path, args, message):
    data = _write_noisy(tmp_path / "noisy")
    result = invoke(tiny_train_args(tmp_path, data, *args))
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert written_outputs(tmp_path) == []


def test_make_train_passes_the_task():
    dry = subprocess.run(["make", "-n", "train", "TASK=n2v", "DATA=d"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "--task n2v" in dry and "--data d" in dry
