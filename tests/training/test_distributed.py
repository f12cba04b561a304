"""training.distributed: DDP through torchrun on CPU (Gloo, 2 processes), and the single-process no-op."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
import torch

from conftest import BIN_DIR, REPO_ROOT, tiny_train_args, write_8bit
from training import distributed
from training.config import UNetConfig
from training.model import UNet
from training.trainer import train_step

TORCHRUN = BIN_DIR / "torchrun"
MODEL = UNetConfig(depth=2, base_channels=4)

# One training step per rank on its half of a saved batch; rank 0 saves the weights afterwards.
WORKER = textwrap.dedent("""
    import sys, torch
    from training import distributed
    from training.config import UNetConfig
    from training.model import UNet
    from training.trainer import train_step

    context, device = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=4))
    net = distributed.wrap(model, context, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = torch.load(sys.argv[1], weights_only=True)
    x, y = batch["x"].chunk(context.world_size)[context.rank], batch["y"].chunk(context.world_size)[context.rank]
    train_step(net, x, y, optimizer, torch.amp.GradScaler("cuda", enabled=False), torch.nn.L1Loss(), False)
    if context.is_main:
        torch.save(model.state_dict(), sys.argv[2])
    distributed.shutdown(context)
""")

# The time budget's schedule fit on each rank with the rank's own timing: all must take the same end (their mean).
FIT_WORKER = textwrap.dedent("""
    import json, sys, torch
    from training import distributed
    from training.config import TrainConfig
    from training.trainer import LRSchedule, _fit_schedule

    context, device = distributed.setup(torch.device("cpu"))
    schedule = LRSchedule(TrainConfig(epochs=3, steps_per_epoch=20, warmup_steps=1))
    seconds = [40.0, 30.0][context.rank]  # 20 steps took 40 s: 10 more fit in 60 s (end 30); took 30 s: 20 more (40)
    moved = _fit_schedule(schedule, 20, seconds, 60.0, context, device)
    ends = distributed.gather(schedule.end, context)
    if context.is_main:
        json.dump({"ends": ends, "moved": moved}, open(sys.argv[1], "w"))
    distributed.shutdown(context)
""")


def torchrun(*args: str, cwd=None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *args], cwd=cwd or REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_without_torchrun_everything_is_a_single_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    context, device = distributed.setup(torch.device("cpu"))
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)
    model = UNet(MODEL)
    assert distributed.wrap(model, context, device) is model
    assert distributed.mean(2.5, context, device) == 2.5 and distributed.agree(True, context, device)
    assert distributed.gather({"a": 1}, context) == [{"a": 1}]


def test_each_rank_samples_its_own_stream_and_rank_0_the_single_process_one():
    draws = [distributed.rank_rng(7, rank).integers(1 << 30, size=4) for rank in range(3)]
    assert np.array_equal(draws[0], np.random.default_rng(7).integers(1 << 30, size=4))
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    assert np.array_equal(draws[1], distributed.rank_rng(7, 1).integers(1 << 30, size=4))


def test_a_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path):
    # plain SGD, so a wrongly scaled or unsynchronised gradient changes the weights (Adam's first step would not)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 16, 16, generator=generator)
    y = x + 0.3 * torch.randn(4, 1, 16, 16, generator=generator)
    torch.save({"x": x, "y": y}, tmp_path / "batch.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    done = torchrun(str(tmp_path / "worker.py"), str(tmp_path / "batch.pt"), str(tmp_path / "ddp.pt"))
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    torch.manual_seed(0)
    model = UNet(MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(model, x, y, optimizer, torch.amp.GradScaler("cuda", enabled=False), torch.nn.L1Loss(), False)
    for key, value in model.state_dict().items():
        assert not torch.equal(before[key], value), key  # the step moved every weight
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # one half of the batch alone gives other weights: the match above needs the gradient averaging
    torch.manual_seed(0)
    half = UNet(MODEL)
    train_step(half, x[:2], y[:2], torch.optim.SGD(half.parameters(), lr=0.5),
               torch.amp.GradScaler("cuda", enabled=False), torch.nn.L1Loss(), False)
    assert not torch.allclose(half.state_dict()["head.weight"], ddp["head.weight"], atol=1e-4)


@pytest.mark.slow
def test_two_process_cli_run_makes_one_run_and_one_checkpoint_and_resumes(tmp_path):
    from mlflow.tracking import MlflowClient

    data = write_8bit(tmp_path / "data", fovs={"train": (1, 2, 3, 71), "test": (81,)}, shape=(40, 48))
    args = tiny_train_args(tmp_path, data, "--val-fovs", "071", epochs=1, steps=3)
    first = torchrun("-m", "w2s.cli", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("best checkpoint:") == 1 and first.stdout.count("MLflow run:") == 1
    runs = list((tmp_path / "runs").iterdir())
    run_dirs = [p for p in runs if p.is_dir()]
    assert len(run_dirs) == 1 and {"best.pt", "last.pt"} <= {p.name for p in run_dirs[0].iterdir()}
    assert not list(tmp_path.rglob("*.pt.tmp")) and not list(tmp_path.rglob(".*.tmp"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("w2s-denoising")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    last = torch.load(run_dirs[0] / "last.pt", weights_only=True)
    states = last["rng"]["numpy_ranks"]
    assert len(states) == 2 and states[0] != states[1] and states[0] == last["rng"]["numpy"]

    resumed = torchrun("-m", "w2s.cli", "train", "--resume", str(run_dirs[0]), "--epochs", "2", "--quiet",
                       cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("best checkpoint:") == 1
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert [p for p in (tmp_path / "runs").iterdir() if p.is_dir()] == run_dirs
    history = torch.load(run_dirs[0] / "last.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    run_id = (run_dirs[0] / "mlflow_run_id").read_text()
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2]


def test_the_time_budget_gives_every_rank_the_same_cosine_end(tmp_path):
    import json

    (tmp_path / "fit_worker.py").write_text(FIT_WORKER)
    done = torchrun(str(tmp_path / "fit_worker.py"), str(tmp_path / "ends.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "ends.json").read_text())
    assert result["ends"] == [35, 35]  # rank 0 alone would end at 30, rank 1 at 40: DDP needs one lr
    assert "ends at step 35 (was 60; 60 planned)" in result["moved"]
