"""`w2s evaluate` end to end on tiny generated data: tables, baselines, saved outputs, MLflow, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from evaluation.evaluate import evaluate_model, score_predictions
from evaluation.metrics import METRICS, score_image
from evaluation_fixtures import (make_w2s_8bit, no_repo_mlflow, save_tiny_checkpoint, trained_run,  # noqa: F401
                                 w2s_data, write_png)
from training.errors import UserError
from training.io import read_image
from w2s.cli import cli

REPO = Path(__file__).resolve().parents[2]
CHEAP = "gaussian,median"  # NLM and BM3D are exercised in test_baselines_including_bm3d


def _w2s(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _peer_dir(tmp_path: Path, data: Path, names: list[str], suffix: str = ".png", transform=None) -> Path:
    """Another tool's saved outputs: a Gaussian-smoothed copy of each noisy input."""
    from scipy.ndimage import gaussian_filter

    folder = tmp_path / f"peer{suffix.replace('.', '-')}"
    folder.mkdir(exist_ok=True)
    for name in names:
        noisy = read_image(data / "train" / "avg1" / f"{name}.png").astype(np.float32)
        out = gaussian_filter(noisy, 1.0)
        out = transform(out) if transform else out
        if suffix == ".png":
            write_png(folder / f"{name}.png", np.clip(np.round(out), 0, 255).astype(np.uint8))
        else:
            tifffile.imwrite(folder / f"{name}{suffix}", out.astype(np.float32))
    return folder


def test_evaluate_model_scores_every_method_and_writes_the_reports(tmp_path, w2s_data):
    checkpoint = save_tiny_checkpoint(tmp_path / "model" / "best.pt", w2s_data)
    out = tmp_path / "out"
    result = evaluate_model(checkpoint, baselines=CHEAP, out_dir=out, panels=1, progress=False,
                            save_predictions=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["split"] == "test"  # FOV 081 exists, so the held-out split is test
    assert summary["n_images_scored"] == summary["data"]["n_images"] == 2
    assert list(summary["methods"]) == ["noisy input", "U-Net", "Gaussian filter", "median filter"]
    assert summary["baseline_tuning"]["split"] == "val"
    assert all(name.startswith("07") for name in summary["baseline_tuning"]["images"])  # tuned on val FOVs
    assert summary["baselines"]["Gaussian filter"]["value"] in (0.5, 1.0, 1.5, 2.0, 3.0)
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 2 * 4 and set(rows[0]) == {"image", "method", *METRICS}
    table = (out / "report.md").read_text()
    assert "**2 of 2 images scored**" in table and "| U-Net | 2 |" in table and table == result.table
    assert (out / "panels" / "081_0.png").is_file() and not (out / "panels" / "081_1.png").exists()
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["081_0.tif", "081_1.tif"]
    # the table's means are the means of the per-image rows
    psnrs = [float(r["psnr"]) for r in rows if r["method"] == "U-Net"]
    assert result.mean("U-Net", "psnr") == pytest.approx(np.mean(psnrs), abs=1e-5)
    assert "no training run" in result.mlflow_message


def test_held_out_split_is_val_when_the_data_has_no_test_fovs(tmp_path):
    data = make_w2s_8bit(tmp_path / "data", fovs=(1, 2, 71), channels=(0,), size=48)
    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", data)
    result = evaluate_model(checkpoint, baselines="gaussian", progress=False)
    assert result.summary["data"]["split"] == "val" and result.summary["data"]["images"] == ["071_0"]
    assert result.summary["baseline_tuning"]["split"] == "train"  # never the split being reported
    assert result.out_dir is None and result.files == {}


def test_saved_outputs_of_other_tools_are_scored_by_file_name(tmp_path, w2s_data):
    names = ["071_0", "071_1", "072_0", "072_1"]
    png = _peer_dir(tmp_path, w2s_data, names)
    tif = _peer_dir(tmp_path, w2s_data, names, ".tif", transform=lambda x: 2 * x + 7)
    result = score_predictions({"peer-png": png, "peer-tif": tif}, w2s_data, split="val", out_dir=tmp_path / "o",
                               progress=False)
    assert result.summary["n_images_scored"] == 4
    expected = np.mean([score_image(read_image(w2s_data / "train" / "avg400" / f"{n}.png"),
                                    read_image(png / f"{n}.png"))["psnr"] for n in names])
    assert result.mean("peer-png", "psnr") == pytest.approx(expected)
    # an affine change of the output changes PSNR but not SI-PSNR
    assert result.mean("peer-tif", "si_psnr") == pytest.approx(result.mean("peer-png", "si_psnr"), abs=0.05)
    assert result.mean("peer-tif", "psnr") < result.mean("peer-png", "psnr") - 3


def test_cli_evaluate_model_with_predictions_in_the_same_table(tmp_path, w2s_data):
    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", w2s_data)
    peer = _peer_dir(tmp_path, w2s_data, ["081_0", "081_1"])
    result = _w2s("evaluate", "--model", checkpoint, "--predictions", f"smooth={peer}", "--predictions", str(peer),
                  "--baselines", "none", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert "| smooth | 2 |" in result.output and f"| {peer.name} | 2 |" in result.output
    assert "scored 2 of 2 images (test split)" in result.output


def test_baselines_including_bm3d(tmp_path, w2s_data):
    pytest.importorskip("bm3d")
    result = score_predictions({"peer": _peer_dir(tmp_path, w2s_data, ["081_0", "081_1"])}, w2s_data, split="test",
                               baselines="all", tune_images=1, progress=False)
    methods = result.summary["methods"]
    assert {"Gaussian filter", "median filter", "non-local means", "VST+BM3D"} <= set(methods)
    for label in ("non-local means", "VST+BM3D"):
        assert methods[label]["mean"]["si_psnr"] > methods["noisy input"]["mean"]["si_psnr"]
        assert result.summary["baselines"][label]["grid_scores"]


def test_evaluation_is_logged_on_the_training_run_and_listed_by_w2s_runs(tmp_path, trained_run):
    from mlflow import MlflowClient

    run_id, uri = trained_run["result"].run_id, trained_run["uri"]
    out = tmp_path / "eval"
    result = _w2s("evaluate", "--model", trained_run["latest"], "--baselines", "none", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"to MLflow run {run_id}" in result.output
    run = MlflowClient(uri).get_run(run_id)
    summary = json.loads((out / "summary.json").read_text())
    for metric in METRICS:
        assert run.data.metrics[f"test_{metric}"] == pytest.approx(summary["methods"]["U-Net"]["mean"][metric])
    assert run.data.tags["eval.split"] == "test" and run.info.status == "FINISHED"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "evaluation/test")}
    assert {"evaluation/test/report.md", "evaluation/test/summary.json", "evaluation/test/per_image.csv",
            "evaluation/test/panels"} <= artifacts

    listing = _w2s("runs", "--experiment", "w2s-test", "--tracking-uri", uri, "--sort", "test_si_psnr")
    assert listing.exit_code == 0, listing.output
    assert run_id[:12] in listing.output and "test_psnr" in listing.output
    assert f"{summary['methods']['U-Net']['mean']['psnr']:.2f}" in listing.output
    missing = _w2s("runs", "--experiment", "nope", "--tracking-uri", uri)
    assert missing.exit_code == 2 and "nope" in missing.output


def test_evaluate_a_registered_model_by_uri(tmp_path, trained_run):
    from mlflow import MlflowClient

    uri = trained_run["uri"]
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias("w2s-unet", "champion", client.search_model_versions("name='w2s-unet'")[0].version)
    result = evaluate_model("models:/w2s-unet@champion", baselines="none", tracking_uri=uri, log_mlflow=False,
                            progress=False)
    assert result.summary["model"]["mlflow_run_id"] == trained_run["result"].run_id
    assert result.summary["n_images_scored"] == 2


@pytest.mark.parametrize("case", ["missing", "shape", "nan", "not_an_image"])
def test_bad_predictions_are_one_line_errors_and_no_table(tmp_path, w2s_data, case):
    names = ["071_0", "071_1", "072_0", "072_1"]
    peer = _peer_dir(tmp_path, w2s_data, names, ".tif")
    bad = peer / "072_0.tif"
    if case == "missing":
        bad.unlink()
    elif case == "shape":
        tifffile.imwrite(bad, np.zeros((64, 63), np.float32))
    elif case == "nan":
        array = tifffile.imread(bad)
        array[3, 4] = np.nan
        tifffile.imwrite(bad, array)
    else:
        bad.write_bytes(b"garbage")
    out = tmp_path / "out"
    result = _w2s("evaluate", "--data", w2s_data, "--split", "val", "--predictions", f"peer={peer}",
                  "--baselines", "none", "--out", out, "--quiet")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2s: error: ") and "072_0" in lines[0]
    assert "Traceback" not in result.output
    assert not (out / "report.md").exists() and not (out / "summary.json").exists()


def test_bad_model_and_empty_split_are_one_line_errors(tmp_path, w2s_data):
    (tmp_path / "junk.pt").write_text("junk")
    no_test = make_w2s_8bit(tmp_path / "d2", fovs=(1, 71), channels=(0,), size=32)
    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", no_test)
    cases = [
        (["--model", tmp_path / "missing.pt"], "missing.pt"),
        (["--model", tmp_path / "junk.pt"], "junk.pt"),
        (["--model", checkpoint, "--split", "test"], "test split is empty"),
        (["--data", w2s_data], "nothing to score"),
    ]
    for args, message in cases:
        result = _w2s("evaluate", *args, "--baselines", "none", "--out", tmp_path / "out", "--quiet")
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(UserError, match="missing prediction"):
        score_predictions({"empty": tmp_path}, w2s_data, split="val", progress=False)


def test_make_targets_pass_their_variables():
    dry = subprocess.run(["make", "-n", "evaluate", "MODEL=m.pt", "DATA=d", "SPLIT=val", "ARGS=--quiet"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "w2s evaluate --model m.pt --data d --split val --quiet" in dry
    default = subprocess.run(["make", "-n", "evaluate"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "w2s evaluate --model runs/latest" in default
    compare = subprocess.run(["make", "-n", "compare", "SORT=test_ssim"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    assert "w2s runs" in compare and "--sort test_ssim" in compare


def test_tta_adds_a_row_for_the_averaged_model(tmp_path, w2s_data):
    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt", w2s_data)
    result = _w2s("evaluate", "--model", checkpoint, "--baselines", "none", "--tta", "--out", tmp_path / "o",
                  "--no-mlflow", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert list(summary["methods"]) == ["noisy input", "U-Net", "U-Net +TTA"]
    assert summary["methods"]["U-Net"] != summary["methods"]["U-Net +TTA"]
    bad = _w2s("evaluate", "--data", w2s_data, "--predictions", str(tmp_path / "o"), "--tta")
    assert bad.exit_code == 2 and "--tta needs --model" in bad.output
