"""`w2s train`: bad input is one line naming the culprit, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import W2S_BIN, invoke, tiny_train_args, written_outputs
from training.config import TrainConfig
from w2s.cli import TRAIN_OPTIONS, build_config, cli


def assert_user_error(result, tmp: Path, *needles: str) -> str:
    """Exit 2, exactly one stderr line `w2s: error: ...` containing every needle, nothing on stdout,
    no traceback, and no run folder, checkpoint or tracking store left behind."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("w2s: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    assert written_outputs(tmp) == [], written_outputs(tmp)
    return lines[0]


def config_args(tmp: Path, *extra: str) -> list[str]:
    """Outputs under `tmp`, but no tiny-model options: those would override a bad --set or config value."""
    return ["train", "--data", str(tmp / "unused"), "--out-dir", str(tmp / "runs"), "--tracking-uri",
            f"sqlite:///{tmp}/mlflow.db", "--cache-dir", str(tmp / "cache"), "--quiet", *extra]


# ------------------------------------------------------------------------------------------------ bad data


def test_missing_data_dir(workdir):
    result = invoke(tiny_train_args(workdir, workdir / "no-such-dir"))
    assert_user_error(result, workdir, f"{workdir / 'no-such-dir'}: data directory not found")


def test_empty_data_dir(workdir):
    (workdir / "empty").mkdir()
    result = invoke(tiny_train_args(workdir, workdir / "empty"))
    assert_user_error(result, workdir, f"{workdir / 'empty'}: data directory is empty")


def test_unrecognised_layout(workdir):
    (workdir / "stuff").mkdir()
    (workdir / "stuff" / "image.jpg").write_bytes(b"\xff\xd8")
    result = invoke(tiny_train_args(workdir, workdir / "stuff"))
    assert_user_error(result, workdir, f"{workdir / 'stuff'}: unknown data layout")


def test_unknown_layout_value_in_config(workdir, make_8bit):
    make_8bit(workdir / "data", fovs={"train": (1, 71)}, channels=1)
    result = invoke(tiny_train_args(workdir, workdir / "data", "--set", "layout=tiff"))
    assert_user_error(result, workdir, "invalid config value layout='tiff'", "8bit")


def test_unknown_layout_option_is_a_usage_error(workdir):
    result = invoke(tiny_train_args(workdir, workdir, "--layout", "tiff"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Invalid value for '--layout': 'tiff' is not one of" in result.output
    assert written_outputs(workdir) == []


def test_paired_unmatched_names(workdir, make_paired):
    make_paired(workdir / "data", {"a": (16, 16), "b": (16, 16)})
    (workdir / "data" / "inputs" / "b.tif").rename(workdir / "data" / "inputs" / "bb.tif")
    result = invoke(tiny_train_args(workdir, workdir / "data"))
    # the first unmatched name in sorted order, 'b', is only in targets/
    assert_user_error(result, workdir, f"{workdir / 'data' / 'targets' / 'b.tif'}: no file named 'b' in "
                      f"{workdir / 'data' / 'inputs'}")


def test_paired_shape_mismatch(workdir, make_paired):
    make_paired(workdir / "data", {"a": (3, 16, 16), "b": (16, 16)})
    tifffile.imwrite(workdir / "data" / "targets" / "a.tif", np.zeros((2, 16, 16), np.float32))
    result = invoke(tiny_train_args(workdir, workdir / "data"))
    assert_user_error(result, workdir, str(workdir / "data" / "inputs" / "a.tif"), "(3, 16, 16)", "(2, 16, 16)")


def test_nan_in_a_normalized_input(workdir, make_normalized):
    make_normalized(workdir / "data", fovs=(1, 71), channels=1)
    path = workdir / "data" / "normalized" / "avg1" / "071_0.npy"
    image = np.load(path)
    image[0, 0] = np.nan
    np.save(path, image)
    result = invoke(tiny_train_args(workdir, workdir / "data", "--val-fovs", "071"))
    assert_user_error(result, workdir, f"{path}: contains 1 NaN/Inf value(s)")


def test_truncated_png(workdir, make_8bit):
    make_8bit(workdir / "data", fovs={"train": (1, 71)}, channels=1)
    path = workdir / "data" / "train" / "avg1" / "001_0.png"
    path.write_bytes(path.read_bytes()[:100])
    result = invoke(tiny_train_args(workdir, workdir / "data", "--val-fovs", "071"))
    assert_user_error(result, workdir, f"{path}: cannot read image")


def test_text_file_named_npy(workdir, make_normalized):
    make_normalized(workdir / "data", fovs=(1, 71), channels=1)
    path = workdir / "data" / "normalized" / "avg400" / "001_0.npy"
    path.write_text("1,2,3\n4,5,6\n")
    result = invoke(tiny_train_args(workdir, workdir / "data", "--val-fovs", "071"))
    assert_user_error(result, workdir, f"{path}: cannot read image")


def test_no_validation_images(workdir, make_8bit):
    make_8bit(workdir / "data", fovs={"train": (1, 2)}, channels=1)
    result = invoke(tiny_train_args(workdir, workdir / "data", "--val-fovs", "050-060"))
    assert_user_error(result, workdir, "no validation images (val FOVs 050-060 match no file)")


# --------------------------------------------------------------------------------------------- bad config


@pytest.mark.parametrize("extra, needle", [
    (["--epochs", "0"], "invalid config value epochs=0: expected at least 1"),
    (["--set", "model.depth=abc"], "invalid config value model.depth='abc': expected int"),
    (["--set", "epoch=3"], "unknown config key(s): epoch"),
    (["--set", "model.width=3"], "unknown model key(s): model.width"),
    (["--set", "epochs"], "--set 'epochs': expected KEY=VALUE"),
    (["--patch-size", "20"], "invalid config value patch_size=20: expected a positive multiple of 2**depth = 8"),
    (["--lr", "-1"], "invalid config value lr=-1.0: expected positive"),
    (["--val-fovs", "71-x"], "invalid val_fovs '71-x'"),
    (["--device", "tpu"], "invalid config value device='tpu'"),
])
def test_invalid_config_values(workdir, extra, needle):
    result = invoke(config_args(workdir, *extra))
    assert_user_error(result, workdir, needle)


def test_bad_config_yaml(workdir):
    (workdir / "bad.yaml").write_text("epochs: [1, 2\nlr: 0.1\n")
    result = invoke(config_args(workdir, "--config", str(workdir / "bad.yaml")))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"w2s: error: {workdir / 'bad.yaml'}: cannot parse config (ParserError")
    assert written_outputs(workdir) == []


def test_bad_config_yaml_is_one_line(workdir):
    (workdir / "bad.yaml").write_text("epochs: [1, 2\nlr: 0.1\n")
    assert_user_error(invoke(config_args(workdir, "--config", str(workdir / "bad.yaml"))), workdir,
                      f"{workdir / 'bad.yaml'}: cannot parse config")


def test_bad_config_json(workdir):
    (workdir / "bad.json").write_text("{'epochs': 1}")
    result = invoke(config_args(workdir, "--config", str(workdir / "bad.json")))
    assert_user_error(result, workdir, f"{workdir / 'bad.json'}: cannot parse config (JSONDecodeError")


def test_missing_config_file(workdir):
    result = invoke(config_args(workdir, "--config", "nope.yaml"))
    assert_user_error(result, workdir, "nope.yaml: config file not found")


def test_config_file_with_a_wrong_type(workdir):
    (workdir / "c.yaml").write_text("epochs: many\n")
    result = invoke(config_args(workdir, "--config", str(workdir / "c.yaml")))
    assert_user_error(result, workdir, "invalid config value epochs='many': expected int")


def test_resume_from_a_non_checkpoint_file(workdir):
    (workdir / "notes.ckpt").write_text("not a checkpoint\n")
    result = invoke(["train", "--resume", str(workdir / "notes.ckpt"), "--quiet"])
    assert_user_error(result, workdir, f"{workdir / 'notes.ckpt'}: not a loadable w2s checkpoint")
    result = invoke(["train", "--resume", str(workdir), "--quiet"])  # a folder without last.pt
    assert_user_error(result, workdir, f"{workdir / 'last.pt'}: checkpoint not found")
    result = invoke(["train", "--resume", str(workdir / "gone"), "--quiet"])
    assert_user_error(result, workdir, f"{workdir / 'gone'}: checkpoint not found")


@pytest.mark.parametrize("case", ["missing-data", "nan-input"])
def test_console_script_reports_one_line_and_exit_2(tmp_path, make_normalized, case):
    """The real `w2s` executable (not click's test runner): stderr, exit status and leftovers."""
    data = tmp_path / "no-such-dir"
    if case == "nan-input":
        data = make_normalized(tmp_path / "data", fovs=(1, 71), channels=1)
        path = data / "normalized" / "avg1" / "001_0.npy"
        image = np.load(path)
        image[4, 4] = np.nan
        np.save(path, image)
    proc = subprocess.run([str(W2S_BIN), *tiny_train_args(tmp_path, data, "--val-fovs", "071")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2s: error: "), proc.stderr
    assert (str(data) if case == "missing-data" else "001_0.npy: contains 1 NaN/Inf") in lines[0]
    assert written_outputs(tmp_path) == []


def test_quiet_means_no_progress_bars(workdir, make_raw):
    make_raw(workdir / "data", fovs=(1, 2), frames=3)
    result = invoke(tiny_train_args(workdir, workdir / "data", "--val-fovs", "050"))
    assert result.exit_code == 2, result.output
    assert "averaging raw stacks" not in result.stderr
    assert result.stderr.strip().splitlines() == ["w2s: error: data: no validation images "
                                                  "(val FOVs 050 match no file)".replace("data", str(workdir / "data"))]


# ------------------------------------------------------------------------------------ building the config


def test_precedence_defaults_file_set_options(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.01\nbatch_size: 4\nmodel:\n  depth: 2\n  base_channels: 8\n")
    config = build_config(str(tmp_path / "c.yaml"), {"epochs": 5, "depth": None, "lr": None},
                          ("epochs=4", "lr=0.02", "model.base_channels=6"))
    assert config.epochs == 5  # option > --set > file
    assert config.lr == 0.02  # --set > file
    assert config.batch_size == 4  # file > default
    assert (config.model.depth, config.model.base_channels) == (2, 6)
    assert config.patch_size == TrainConfig().patch_size  # default


def test_preset_option_with_explicit_model_options():
    config = build_config(None, {"preset": "seed", "depth": 2}, ())
    assert (config.model.depth, config.model.base_channels, config.model.upsample) == (2, 64, "transpose")


def test_every_train_option_maps_to_a_config_key():
    import click

    flat = TrainConfig().flat()
    params = {p.name for p in cli.commands["train"].params if isinstance(p, click.Option)}
    assert params - {"config_file", "sets", "resume", "quiet", "help"} == set(TRAIN_OPTIONS)
    assert set(TRAIN_OPTIONS.values()) <= set(flat)


def test_help_lists_the_options():
    result = invoke(["train", "--help"])
    assert result.exit_code == 0
    for option in ("--data", "--layout", "--resume", "--set", "--tracking-uri", "--log-model / --no-log-model"):
        assert option in result.output


def test_the_last_of_repeated_set_options_wins():
    assert build_config(None, {}, ("epochs=1", "epochs=2")).epochs == 2


def test_set_with_an_empty_value_gives_the_empty_string():
    assert build_config(None, {}, ("registered_model=",)).registered_model == ""  # "empty: not registered"
    assert build_config(None, {}, ("registered_model=",)).registered_model_name() is None


def test_empty_model_section_with_a_model_option(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\nmodel:\n")
    assert build_config(str(tmp_path / "c.yaml"), {"depth": 2}, ()).model.depth == 2
