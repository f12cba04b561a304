"""training.trainer through `w2s train`: run folder, checkpoints, the MLflow run, resuming, real data.

The fast tests share one session fixture (`tiny_training` in conftest.py): a 2-epoch run, and a 1-epoch run
with the same seed that is then resumed to 2 epochs, all on 40x48 px images in one temporary SQLite store.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MLFLOW_BIN, REPO_ROOT, SHARED_DATA, free_port, invoke, tiny_train_args, write_8bit
from training.checkpoint import code_version, load_model
from training.config import TrainConfig, UNetConfig
from training.data.layouts import discover_pairs, fingerprint
from training.model import UNet, count_parameters
from training.trainer import train_step

PER_EPOCH = ("train_loss", "val_loss", "val_psnr", "val_ssim", "val_si_psnr", "lr", "patches_per_s")


@pytest.fixture(scope="module")
def client(tiny_training):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tiny_training.tracking_uri)


def artifact_paths(client, run_id, path=None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


# ------------------------------------------------------------------------------------------------ a CLI run


def test_run_folder_holds_checkpoints_and_config(tiny_training):
    run = tiny_training.full_dir
    assert run.parent == tiny_training.root / "runs"
    assert {"best.pt", "last.pt", "config.json", "mlflow_run_id"} <= {p.name for p in run.iterdir()}
    assert not list(run.glob(".*.tmp"))  # atomic writes left no temporary files
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["steps_per_epoch"], config["seed"], config["lr"]) == (2, 3, 7, 0.003)
    assert config["model"]["depth"] == 2 and config["model"]["base_channels"] == 4
    assert config["data"] == str(tiny_training.data) and config["log_model"] is False
    TrainConfig.from_dict(config).validate()
    assert (run / "mlflow_run_id").read_text() == tiny_training.full_run_id
    output = tiny_training.full_output
    assert "best epoch" in output and "val PSNR" in output and "noisy input" in output


def test_mlflow_params_are_the_whole_config(tiny_training, client):
    params = client.get_run(tiny_training.full_run_id).data.params
    config = TrainConfig.from_dict(json.loads((tiny_training.full_dir / "config.json").read_text()))
    for key, value in config.flat().items():
        assert params[key] == str(value), key
    assert params["model.depth"] == "2" and params["lr"] == "0.003" and params["epochs"] == "2"
    assert params["n_parameters"] == str(count_parameters(UNet(config.model)))
    assert (params["n_train_images"], params["n_val_images"]) == ("6", "2")
    assert Path(params["data_root"]) == tiny_training.data.resolve()


def test_mlflow_metrics_per_epoch(tiny_training, client):
    run_id = tiny_training.full_run_id
    history = torch.load(tiny_training.full_dir / "last.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for key in PER_EPOCH:
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2], key
        assert [m.value for m in logged] == pytest.approx([h[key] for h in history], rel=1e-6), key
        assert all(np.isfinite(m.value) for m in logged), key
    metrics = client.get_run(run_id).data.metrics
    assert metrics["lr"] == pytest.approx(0.003)  # schedule=constant after a 1-step warmup
    assert metrics["patches_per_s"] > 0
    select = client.get_run(run_id).data.tags["best_epoch_metric"]
    assert select == "val_si_psnr"  # the fixture is the 8-bit layout: targets are fitted to the input per image
    best = max(history, key=lambda h: h[select])
    assert metrics[f"best_{select}"] == best[select]
    assert metrics["best_val_psnr"] == best["val_psnr"]
    assert {"noisy_psnr", "noisy_ssim", "noisy_si_psnr"} <= set(metrics)
    assert metrics["val_ssim"] <= 1.0


def test_mlflow_tags(tiny_training, client):
    tags = client.get_run(tiny_training.full_run_id).data.tags
    best = torch.load(tiny_training.full_dir / "best.pt", weights_only=True)
    assert tags["git_commit"] == best["code_version"]
    assert tags["git_commit"].split("-")[0] == code_version().split("-")[0]
    assert tags["data_layout"] == "8bit"
    assert tags["noise_level"] == "avg1"
    assert tags["data_fingerprint"] == fingerprint(discover_pairs(tiny_training.data, "auto", "avg1")[1])
    assert tags["data_fingerprint"] == best["data_fingerprint"]
    assert tags["best_epoch"] == str(best["best_epoch"])
    assert tags["device"] == "cpu"
    assert tags["mlflow.runName"] == "full"


def test_mlflow_artifacts(tiny_training, client, tmp_path):
    run_id = tiny_training.full_run_id
    paths = artifact_paths(client, run_id)
    expected = {"config.json", "checkpoints/best.pt", "loss_curve.png"} | {
        f"panels/071_{c}/epoch_{e:03d}.png" for c in (0, 1) for e in (1, 2)}  # panel_every=1
    assert expected <= paths, sorted(paths)
    local = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path)))
    assert local.read_bytes() == (tiny_training.full_dir / "best.pt").read_bytes()
    from PIL import Image

    panel = np.asarray(Image.open(client.download_artifacts(run_id, "panels/071_0/epoch_002.png", str(tmp_path))))
    assert panel.shape[0] == 40 and panel.shape[1] >= 3 * 48  # noisy | prediction | target


# ---------------------------------------------------------------------------------------------------- resume


def test_resume_continues_the_same_run(tiny_training, client):
    assert tiny_training.resumed_run_id == tiny_training.first_run_id
    assert (tiny_training.first_dir / "mlflow_run_id").read_text() == tiny_training.first_run_id
    state = torch.load(tiny_training.first_dir / "last.pt", weights_only=True)
    before = torch.load(tiny_training.first_epoch_last, weights_only=True)
    assert (before["epoch"], state["epoch"]) == (1, 2)
    assert len(state["history"]) == 2 and state["history"][0] == before["history"][0]
    assert json.loads((tiny_training.first_dir / "config.json").read_text())["epochs"] == 2
    for key in PER_EPOCH:
        assert sorted(m.step for m in client.get_metric_history(tiny_training.first_run_id, key)) == [1, 2], key
    run = client.get_run(tiny_training.first_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1"  # params are those the run started with; config.json has the new ones
    # no new run folder and no new MLflow run
    assert sorted(p.name for p in (tiny_training.root / "runs").iterdir()) == sorted(
        [tiny_training.full_dir.name, tiny_training.first_dir.name, "latest"])
    experiment = client.get_experiment_by_name("w2s-denoising")
    assert len(client.search_runs([experiment.experiment_id])) == 2
    assert (tiny_training.root / "runs" / "latest").read_text() == str(tiny_training.first_dir.resolve())


def test_resumed_training_equals_uninterrupted_training(tiny_training):
    """Same seed and data: 1 epoch + resume to 2 gives the 2-epoch run's weights and metrics.

    Measured on CPU (torch 2.13, 2 threads): bit-identical, so the test demands exact equality. Both runs
    happen in one process with the same thread count, so summation order cannot differ between them. This
    holds for schedule=constant (used here), or while warmup covers all steps: with the cosine schedule a
    1-epoch run decays its learning rate over 1 epoch, so extending it to 2 epochs is a different run by design.
    """
    full = torch.load(tiny_training.full_dir / "last.pt", weights_only=True)
    resumed = torch.load(tiny_training.first_dir / "last.pt", weights_only=True)
    assert full["model_state"].keys() == resumed["model_state"].keys()
    different = [k for k in full["model_state"] if not torch.equal(full["model_state"][k], resumed["model_state"][k])]
    worst = max((float((full["model_state"][k].float() - resumed["model_state"][k].float()).abs().max())
                 for k in different), default=0.0)
    assert not different, f"{len(different)} tensors differ, max abs difference {worst}"
    for a, b in zip(full["history"], resumed["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_psnr", "val_ssim", "val_si_psnr", "lr"):
            assert a[key] == b[key], (a["epoch"], key)
    full_moments, resumed_moments = full["optimizer"]["state"], resumed["optimizer"]["state"]
    assert full_moments.keys() == resumed_moments.keys()
    for index in full_moments:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(full_moments[index][key], resumed_moments[index][key]), (index, key)
    assert full["rng"]["numpy"] == resumed["rng"]["numpy"]


def test_resume_needs_last_pt(tiny_training):
    result = invoke(["train", "--resume", str(tiny_training.full_dir / "best.pt"), "--epochs", "3", "--quiet"])
    assert result.exit_code == 2
    assert "best.pt: checkpoint holds no training state to resume from (use last.pt)" in result.output
    assert torch.load(tiny_training.full_dir / "last.pt", weights_only=True)["epoch"] == 2


def test_resume_refuses_changed_data(tiny_training, tmp_path):
    state = torch.load(tiny_training.full_dir / "last.pt", weights_only=True)
    state["data_fingerprint"] = "0123456789abcdef"
    state["run_dir"] = str(tmp_path / "run")
    torch.save(state, tmp_path / "last.pt")
    result = invoke(["train", "--resume", str(tmp_path / "last.pt"), "--epochs", "3", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "changed since this run started" in result.output and "0123456789abcdef" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_init_weights_fine_tunes_from_another_runs_weights(tiny_training, tmp_path):
    source = tiny_training.full_dir / "last.pt"
    args = tiny_train_args(tmp_path, tiny_training.data, "--val-fovs", "071", "--init-weights", str(source),
                           "--lr", "1e-12", "--set", "warmup_steps=0", "--seed", "3", steps=1)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    tuned = torch.load(Path((tmp_path / "runs" / "latest").read_text()) / "last.pt", weights_only=True)
    start = torch.load(source, weights_only=True)
    assert tuned["epoch"] == 1 and tuned["config"]["init_weights"] == str(source)
    for name, weight in start["model_state"].items():  # lr ~0: the one step leaves the loaded weights in place
        torch.testing.assert_close(tuned["model_state"][name], weight)


def test_init_weights_refuses_another_architecture(tiny_training, tmp_path):
    source = tiny_training.full_dir / "best.pt"
    args = tiny_train_args(tmp_path, tiny_training.data, "--val-fovs", "071", "--init-weights", str(source))
    args[args.index("--base-channels") + 1] = "8"
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert f"{source}: its model differs from this run's in base_channels (4 there, 8 here)" in result.output
    assert not (tmp_path / "runs").exists()


def test_resume_from_another_directory_continues_in_the_original_folder(tmp_path, monkeypatch):
    data = write_8bit(tmp_path / "data", fovs={"train": (1, 71)}, channels=1)
    first_cwd, other_cwd = tmp_path / "a", tmp_path / "b"
    first_cwd.mkdir()
    other_cwd.mkdir()
    monkeypatch.chdir(first_cwd)
    args = tiny_train_args(tmp_path, data, "--val-fovs", "071")
    args[args.index("--out-dir") + 1] = "runs"  # the defaults: relative out_dir and tracking store
    del args[args.index("--tracking-uri"):args.index("--tracking-uri") + 2]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert (first_cwd / "mlflow.db").is_file()
    run_dir = Path((first_cwd / "runs" / "latest").read_text())
    monkeypatch.chdir(other_cwd)
    result = invoke(["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, repr(result.exception)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 2
    assert not (other_cwd / "runs").exists() and not (other_cwd / "mlflow.db").exists()


# ------------------------------------------------------------------------------------------------------ slow


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["8bit", "normalized", "raw", "paired"])
def test_every_layout_trains_end_to_end(layout, workdir, make_8bit, make_normalized, make_raw, make_paired):
    data = workdir / "data"
    if layout == "8bit":
        make_8bit(data, fovs={"train": (1, 2, 71)}, channels=1)
    elif layout == "normalized":
        make_normalized(data, fovs=(1, 2, 71), channels=1)
    elif layout == "raw":
        make_raw(data, fovs=(1, 2, 71), frames=4, shape=(32, 32))
    else:
        make_paired(data, {f"cell{i}": (2, 32, 32) for i in range(5)})
    result = invoke(tiny_train_args(workdir, data, "--val-fovs", "071"))
    assert result.exit_code == 0, result.output
    state = torch.load(Path((workdir / "runs" / "latest").read_text()) / "best.pt", weights_only=True)
    assert state["data_layout"] == layout
    expected_target = "fit" if layout == "8bit" else "input"
    assert state["normalization"]["target"] == expected_target
    if layout == "8bit":  # the dataset-wide map to the targets' scale was fitted, not left at identity
        assert (state["normalization"]["gain"], state["normalization"]["bias"]) != (1.0, 0.0)
    if layout == "paired":
        assert state["split"]["val"] == ["cell4"]
    if layout == "raw":
        assert {p.name for p in (workdir / "cache").iterdir()} >= {"Image071_c0_avg1.npy", "Image071_c0.json"}


@pytest.mark.slow
def test_log_model_registers_the_model_with_the_checkpoint_inside(workdir, make_8bit):
    import mlflow
    from mlflow.tracking import MlflowClient

    data = make_8bit(workdir / "data", fovs={"train": (1, 2, 71)}, channels=1)
    args = [a for a in tiny_train_args(workdir, data, "--val-fovs", "071") if a != "--no-log-model"]
    result = invoke(args + ["--log-model"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    versions = client.search_model_versions("name='w2s-unet'")
    assert len(versions) == 1
    version = versions[0]
    run_id = Path((workdir / "runs" / "latest").read_text()) / "mlflow_run_id"
    assert version.run_id == run_id.read_text()

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/w2s-unet/{version.version}",
                                                     dst_path=str(workdir / "model")))
    inside = local / "extra_files" / "best.pt"
    assert inside.is_file(), sorted(p.relative_to(local).as_posix() for p in local.rglob("*"))
    best = Path((workdir / "runs" / "latest").read_text()) / "best.pt"
    assert inside.read_bytes() == best.read_bytes()
    assert torch.load(inside, weights_only=True)["format"] == "w2s-checkpoint/1"

    model = mlflow.pytorch.load_model(f"models:/w2s-unet/{version.version}")
    for shape in [(1, 1, 32, 32), (3, 1, 24, 40)]:  # the signature promises any batch and size
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), load_model(best).model(x))

    # --resume of the finished run (bringing MLflow in sync) keeps the one version: best.pt did not change
    assert client.get_run(version.run_id).data.tags["logged_model_epoch"] == "1"
    result = invoke(["train", "--resume", str(best.parent), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(client.search_model_versions("name='w2s-unet'")) == 1


@pytest.mark.slow
def test_training_into_an_http_tracking_server(workdir, make_8bit):
    from mlflow.tracking import MlflowClient

    port = free_port()
    log = open(workdir / "server.log", "wb")
    server = subprocess.Popen(
        [str(MLFLOW_BIN), "server", "--backend-store-uri", f"sqlite:///{workdir}/server.db", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(workdir / "server-artifacts")],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (workdir / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.5)

        data = write_8bit(workdir / "data", fovs={"train": (1, 2, 71)}, channels=1)
        args = tiny_train_args(workdir, data, "--val-fovs", "071", "--run-name", "over-http")
        args[args.index("--tracking-uri") + 1] = uri
        result = invoke(args)
        assert result.exit_code == 0, result.output
        assert f"({uri})" in result.output

        run_id = (Path((workdir / "runs" / "latest").read_text()) / "mlflow_run_id").read_text()
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == "over-http"
        assert run.data.params["model.depth"] == "2"
        assert [m.step for m in client.get_metric_history(run_id, "val_psnr")] == [1]
        assert run.data.tags["data_layout"] == "8bit"
        assert {"config.json", "checkpoints/best.pt"} <= artifact_paths(client, run_id)
        assert (workdir / "server-artifacts").is_dir()
        assert not (workdir / "mlflow.db").exists()  # nothing went to a local store
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()


W2S_8BIT = SHARED_DATA / "w2s-8bit"


@pytest.mark.slow
@pytest.mark.skipif(not (W2S_8BIT / "train" / "avg400").is_dir(),
                    reason=f"real W2S 8-bit data not found at {W2S_8BIT} (see ../shared/data/README.md)")
def test_real_w2s_8bit_model_beats_the_noisy_input(workdir):
    """A small U-Net trained for 2 x 50 steps of 8 patches of 128 px, validated on FOVs 071-072 (6 images).

    About 800 patches: 2-3 minutes on 2 idle CPU cores (much longer on a loaded machine). Measured while
    the machine was heavily shared: noisy 18.08 dB; after epoch 1 val_psnr 21.62 dB (+3.5), SI-PSNR 22.60 dB
    (noisy 18.91). Smaller settings (16 channels, 64 px patches, 160 steps) reached only +1.5 dB, so this
    is about the least training that clears the +3 dB bar with room to spare.
    """
    args = tiny_train_args(workdir, W2S_8BIT, "--val-fovs", "071-072", "--patch-size", "128", "--batch-size", "8",
                           "--base-channels", "32", "--depth", "3", "--lr", "0.001", "--set", "warmup_steps=20",
                           "--set", "panel_every=100", epochs=2, steps=50)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    best = torch.load(Path((workdir / "runs" / "latest").read_text()) / "best.pt", weights_only=True)
    history = best["history"]
    noisy_psnr = history[0]["noisy_psnr"]
    best_psnr = best["best_metrics"]["val_psnr"]
    print(f"real data: noisy {noisy_psnr:.2f} dB, best val_psnr {best_psnr:.2f} dB, "
          f"SI-PSNR {best['best_metrics']['val_si_psnr']:.2f} dB (noisy {history[0]['noisy_si_psnr']:.2f})")
    assert best_psnr >= noisy_psnr + 3.0
    assert best["best_metrics"]["val_si_psnr"] >= history[0]["noisy_si_psnr"] + 2.0


@pytest.mark.slow
def test_embedded_demo_end_to_end(workdir):
    """`w2s train --config configs/demo.yaml` with no --data: writes the synthetic data and learns it."""
    args = ["train", "--config", str(REPO_ROOT / "configs" / "demo.yaml"), "--no-log-model", "--device", "cpu",
            "--quiet", "--out-dir", str(workdir / "runs"), "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
            "--cache-dir", str(workdir / "cache")]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert (workdir / "data" / "demo-w2s" / "synthetic.json").is_file()
    best = torch.load(Path((workdir / "runs" / "latest").read_text()) / "best.pt", weights_only=True)
    assert best["data_layout"] == "raw" and best["config"]["epochs"] == 6
    noisy_psnr, best_psnr = best["history"][0]["noisy_psnr"], best["best_metrics"]["val_psnr"]
    print(f"demo: noisy {noisy_psnr:.2f} dB, best val_psnr {best_psnr:.2f} dB")
    assert best_psnr >= noisy_psnr + 5.0


def test_train_step_with_cpu_bf16_autocast():
    """bf16 autocast on CPU: the forward pass really runs in bfloat16 (the step differs from float32's), the
    weights and optimizer stay float32, and the loss agrees with float32's to bf16 precision."""
    x, y = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.rand(2, 1, 32, 32)
    results = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_channels=8, depth=2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss = train_step(model, x, y, optimizer, torch.amp.GradScaler("cuda", enabled=False), torch.nn.L1Loss(),
                          False, cpu_bf16=bf16)
        results[bf16] = loss, model.state_dict()
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert results[True][0] == pytest.approx(results[False][0], rel=2e-2)
    assert results[True][0] != results[False][0]
    assert any(not torch.equal(results[True][1][k], results[False][1][k]) for k in results[False][1])


@pytest.mark.parametrize("native, precision", [(True, "bfloat16 autocast"), (False, "float32")])
def test_cpu_bf16_only_where_the_cpu_computes_in_bf16(native, precision, workdir, make_8bit, monkeypatch):
    """Emulated bf16 (a CPU without AVX512-BF16 or AMX) ran the recipe's step 13x slower than float32:
    there cpu_bf16 trains in float32 and says so; the run's `precision` tag records what was used."""
    from mlflow.tracking import MlflowClient

    import training.trainer as trainer

    steps = []
    real_step = trainer.train_step
    monkeypatch.setattr(trainer, "native_cpu_bf16", lambda: native)
    monkeypatch.setattr(trainer, "train_step", lambda *a, **k: steps.append(a[-1]) or real_step(*a, **k))
    data = make_8bit(workdir / "data", fovs={"train": (1, 2, 71)}, channels=1)
    result = invoke(tiny_train_args(workdir, data, "--val-fovs", "071", "--set", "cpu_bf16=true"))
    assert result.exit_code == 0, result.output
    assert ("training in float32" in result.output) is not native
    assert steps == [native] * 2
    run_id = (Path((workdir / "runs" / "latest").read_text()) / "mlflow_run_id").read_text()
    tags = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db").get_run(run_id).data.tags
    assert tags["precision"] == precision


def test_synthetic_noise_trains_end_to_end(workdir, make_8bit):
    """On pairs with EMCCD shot noise (redrawn here from each target) every training image gets a model."""
    from skimage import io

    from training.data.noise_model import NoiseModel

    data = make_8bit(workdir / "data", fovs={"train": (1, 2, 71)}, channels=1, shape=(128, 128))
    emccd = NoiseModel(slope=0.6, intercept=12.0, gain=20.0, zero=8.0, low=0.0, high=255.0, integer=True)
    for clean_png in (data / "train" / "avg400").glob("*.png"):
        noisy = emccd.sample(io.imread(clean_png), np.random.default_rng(0)).astype(np.uint8)
        io.imsave(data / "train" / "avg1" / clean_png.name, noisy, check_contrast=False)
    result = invoke(tiny_train_args(workdir, data, "--val-fovs", "071", "--set", "synthetic_noise=0.5"))
    assert result.exit_code == 0, result.output
    assert "noise models fitted to 2/2 training images" in result.output
    config = json.loads((Path((workdir / "runs" / "latest").read_text()) / "config.json").read_text())
    assert config["synthetic_noise"] == 0.5


# ------------------------------------------------------------------------------------- lr schedule, budget


def schedule_config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({"epochs": 4, "steps_per_epoch": 25, "warmup_steps": 10, **changes})


def test_lr_schedule_warms_up_then_follows_a_cosine_to_a_hundredth():
    from training.trainer import LRSchedule

    schedule = LRSchedule(schedule_config())
    assert [schedule(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert schedule(55) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine (10..100)
    assert schedule(100) == pytest.approx(0.01) and schedule(500) == pytest.approx(0.01)
    assert LRSchedule(schedule_config(schedule="constant"))(70) == 1.0


def test_fit_to_budget_keeps_a_plan_that_fits_and_shortens_one_that_does_not():
    from training.trainer import LRSchedule

    schedule = LRSchedule(schedule_config())  # 100 steps planned
    assert schedule.fit_to_budget(25, 10.0, 60.0) == 100  # 100 steps take 40 s of the 60
    assert schedule.fit_to_budget(25, 30.0, 60.0) == 50  # 25 more steps fit in the 30 s left
    assert schedule.fit_to_budget(25, 70.0, 60.0) == 25  # over budget already: never before the steps done
    assert schedule.fit_to_budget(0, 0.0, 60.0) == 100  # nothing measured yet


def test_a_fitted_end_survives_the_checkpoint_and_a_plain_one_follows_more_epochs():
    from training.trainer import LRSchedule

    def restored(end: int, epochs: int) -> LRSchedule:
        model = torch.nn.Linear(1, 1)
        first = LRSchedule(schedule_config())
        first.end = end
        state = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1.0), first).state_dict()
        state = torch.load(_round_trip(state), weights_only=True)  # as last.pt holds it
        second = LRSchedule(schedule_config(epochs=epochs))
        torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1.0), second).load_state_dict(state)
        second.replan(schedule_config(epochs=epochs))
        return second

    assert restored(60, 4).end == 60  # fitted to the budget: kept
    assert restored(60, 8).end == 60
    assert restored(100, 8).end == 200  # as planned: --resume --epochs 8 stretches the cosine over 200 steps


def _round_trip(obj) -> "io.BytesIO":
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_run_slower_than_its_budget_ends_its_cosine_with_the_budget(workdir, make_8bit, monkeypatch):
    """A clock that advances 1 s per reading makes every step take 2 s: 3 epochs x 6 steps (36 s) do not fit
    in 0.4 min (24 s), so after epoch 1 (12 s) the cosine ends at step 6 + 12 s of 2-s steps = 12, the lr
    reaches its floor there, and training stops with the budget."""
    import training.trainer as trainer

    class Clock:
        now = 0.0

        @classmethod
        def perf_counter(cls):
            cls.now += 1.0
            return cls.now

    monkeypatch.setattr(trainer, "time", Clock)
    data = make_8bit(workdir / "data", fovs={"train": (1, 2, 71)}, channels=1)
    args = tiny_train_args(workdir, data, "--val-fovs", "071", "--set", "max_minutes=0.4", "--set", "warmup_steps=1",
                           epochs=3, steps=6)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "cosine schedule now ends at step 12 (was 18; 18 planned)" in result.output
    history = torch.load(Path((workdir / "runs" / "latest").read_text()) / "last.pt", weights_only=True)["history"]
    assert [h["schedule_end"] for h in history] == [12, 12]
    assert history[-1]["lr"] == pytest.approx(1e-3 * 0.01)  # annealed when the budget ran out
