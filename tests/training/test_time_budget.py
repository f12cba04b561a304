"""`max_minutes`: training stops on a wall-clock budget for its steps, validates and checkpoints, and says so."""

from __future__ import annotations

import torch

from conftest import invoke, tiny_train_args, write_8bit


def test_training_stops_when_the_time_budget_is_spent(workdir):
    data = write_8bit(workdir / "data", fovs={"train": (1, 2, 71), "test": (81,)}, shape=(40, 48))
    # 3 epochs of 100000 steps would take hours; a 0.05 s budget ends the first epoch early
    result = invoke(tiny_train_args(workdir, data, "--val-fovs", "071", "--max-minutes", "0.001",
                                    epochs=3, steps=100000))
    assert result.exit_code == 0, result.output
    assert "time budget of 0.001 min of training reached" in result.output
    run = next(p for p in (workdir / "runs").iterdir() if p.is_dir())
    history = torch.load(run / "last.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1]
    assert history[0]["train_minutes"] >= 0.001 and (run / "best.pt").is_file()


def test_negative_budget_is_refused(workdir):
    result = invoke(tiny_train_args(workdir, None, "--max-minutes", "-1"))
    assert result.exit_code == 2 and "max_minutes=-1.0" in result.output
