"""Bad input, tried systematically: every case of bad_inputs.py through the readers, `w2s predict`, `w2s train`,
`w2s evaluate`, `w2s package`, `w2s train --resume` and the container entrypoint, plus a fuzzer over the readers.

Every refused case must give: one line on stderr naming the file, exit 2 (the container entrypoint: 1, the
code Grand Challenge reads as a failed job, documented in submission/inference.py), no traceback, and no
output file. Every accepted case must give a float32 output of the input's shape.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings, strategies as st

from bad_inputs import (ERROR, OK, Case, checkpoint_cases, files_under, good_image, image_cases, npy_bytes, png_bytes,
                        place, run_driver, tiff_bytes, without_file_override, write_dataset)
from training.errors import UserError
from training.io import check_finite, read_image

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_CASES = image_cases()
DATASET_SUFFIXES = (".tif", ".png", ".npy")  # the suffixes a training layout reads (paired, 8bit, normalized)
CHECKPOINT_ENTRIES = ("predict", "package", "resume", "entrypoint")


def tiny_checkpoint(path: Path) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "tests" / "submission"))
    from submission_fixtures import save_tiny_checkpoint

    return save_tiny_checkpoint(path)


def train_args(data: Path, work: Path) -> list[str]:
    return ["train", "--data", str(data), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--patch-size", "16", "--base-channels", "4", "--depth", "2", "--no-log-model", "--device", "cpu",
            "--quiet", "--out-dir", str(work / "runs"), "--tracking-uri", f"sqlite:///{work}/mlflow.db",
            "--cache-dir", str(work / "cache")]


def package_dir(checkpoint: Path, folder: Path) -> Path:
    """A model folder as `w2s package` writes it, but around any file (package itself refuses bad ones)."""
    from submission.inference import MANIFEST_FORMAT, sha256_file

    folder.mkdir(parents=True)
    shutil.copyfile(checkpoint, folder / "best.pt")
    manifest = {"format": MANIFEST_FORMAT, "files": {"best.pt": {"sha256": sha256_file(folder / "best.pt")}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# ------------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
def test_reader(tmp_path, case: Case):
    path = tmp_path / case.name
    case.write(path)
    if case.suffix not in (".tif", ".tiff", ".png", ".npy") and case.outcome == ERROR:
        with pytest.raises(UserError, match="unsupported image format"):
            read_image(path)
        return
    for mmap in (False, True):
        if case.outcome == OK:
            array = read_image(path, mmap=mmap)
            check_finite(array, path)
            assert array.ndim >= 2 and min(array.shape) > 0 and array.dtype.kind in "uif"
        else:
            with pytest.raises(UserError) as info:
                array = read_image(path, mmap=mmap)
                check_finite(array, path)
            message = str(info.value)
            assert str(path) in message and case.message in message and "\n" not in message, message


# ----------------------------------------------------------------------- the CLI and the entrypoint, one driver


@pytest.fixture(scope="module")
def driven(tmp_path_factory):
    """Every (entry point, case) invocation, run by one driver process; returns (plan, results)."""
    work = tmp_path_factory.mktemp("bad-input")
    checkpoint = tiny_checkpoint(work / "good.pt")
    model_dir = package_dir(checkpoint, work / "good-model")
    plan: dict[str, dict] = {}

    def add(key: str, kind: str, args: list[str], expect: str, names: str, message: str, outputs: list[Path]):
        plan[key] = {"id": key, "kind": kind, "args": args, "expect": expect, "names": names, "message": message,
                     "outputs": [str(p) for p in outputs]}

    for index, case in enumerate(IMAGE_CASES):
        base = work / f"img{index:02d}"
        base.mkdir()
        path = base / case.name
        case.write(path)
        out = base / "predicted"
        add(f"predict/{case.name}", "cli", ["predict", str(path), "--model", str(checkpoint), "--out", str(out),
                                           "--device", "cpu", "--quiet"], case.outcome, str(path), case.predict_message or case.message, [out])
        if case.suffix == ".tif":
            job = base / "job"
            folder = job / "input" / "images" / "image-stack-unstructured-noise"
            folder.mkdir(parents=True)
            case.write(folder / case.name)
            add(f"entrypoint/{case.name}", "entrypoint", ["--input", str(job / "input"), "--output", str(job / "output"),
                "--model-dir", str(model_dir), "--device", "cpu"], case.outcome, str(folder / case.name), case.message,
                [job / "output"])
        if case.outcome == ERROR and case.suffix in DATASET_SUFFIXES:
            data = base / "data"
            named = write_dataset(data, case.suffix, path)
            add(f"train/{case.name}", "cli", train_args(data, base), ERROR, str(named), "",
                [base / "runs", base / "mlflow.db", base / "mlruns"])
            predictions = base / "predictions"
            predictions.mkdir()
            place(path, predictions / f"071_0{case.suffix}")
            eight_bit = write_dataset(base / "eval-data", ".png")
            add(f"evaluate/{case.name}", "cli", ["evaluate", "--predictions", f"bad={predictions}", "--data",
                str(eight_bit), "--split", "val", "--baselines", "none", "--panels", "1", "--out",
                str(base / "evaluation"), "--quiet"], ERROR, "071_0", "", [base / "evaluation"])

    marker = work / "PAYLOAD-RAN"
    for case in checkpoint_cases(checkpoint, marker):
        base = work / f"ckpt-{Path(case.name).stem}"
        base.mkdir()
        path = base / case.name
        case.write(path)
        image = base / "image.tif"
        tifffile.imwrite(image, good_image())
        out = base / "predicted"
        add(f"predict/{case.name}", "cli", ["predict", str(image), "--model", str(path), "--out", str(out), "--device",
                                           "cpu", "--quiet"], ERROR, str(path), case.message, [out])
        add(f"package/{case.name}", "cli", ["package", str(path), "--out", str(base / "package")], ERROR, str(path),
            case.message, [base / "package"])
        add(f"resume/{case.name}", "cli", ["train", "--resume", str(path), "--quiet"], ERROR, str(path), "",
            [base / "runs", base / "mlflow.db"])
        bad_model = package_dir(path, base / "model")
        job = base / "job"
        (job / "input" / "images" / "image-stack-unstructured-noise").mkdir(parents=True)
        tifffile.imwrite(job / "input" / "images" / "image-stack-unstructured-noise" / "case.tif", good_image())
        add(f"entrypoint/{case.name}", "entrypoint", ["--input", str(job / "input"), "--output", str(job / "output"),
            "--model-dir", str(bad_model), "--device", "cpu"], ERROR, str(bad_model / "best.pt"), case.message,
            [job / "output"])

    # a folder with a directory symlink loop and one good image: the loop is not an image and is passed over
    looped = work / "looped"
    looped.mkdir()
    tifffile.imwrite(looped / "good.tif", good_image())
    (looped / "again").symlink_to(".")
    add("predict/folder-with-symlink-loop", "cli", ["predict", str(looped), "--model", str(checkpoint), "--out",
        str(work / "looped-out"), "--device", "cpu", "--quiet"], OK, str(looped / "good.tif"), "",
        [work / "looped-out"])

    # several inputs, the last one bad: every input is read before any output is written, so nothing is
    bad = next(c for c in IMAGE_CASES if c.name == "truncated.tif")
    several = work / "several"
    several.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(several / name, good_image())
    bad.write(several / "c-truncated.tif")
    add("predict/good-good-bad", "cli", ["predict", *(str(several / n) for n in ("a.tif", "b.tif", "c-truncated.tif")),
        "--model", str(checkpoint), "--out", str(work / "several-out"), "--device", "cpu", "--quiet"], ERROR,
        str(several / "c-truncated.tif"), bad.message, [work / "several-out"])

    results = run_driver(list(plan.values()), work)
    return plan, results, marker


def _keys(prefix: str) -> list[str]:
    """The plan's keys for one entry point, known without building the plan (for test ids)."""
    keys = []
    for case in IMAGE_CASES:
        if prefix == "predict":
            keys.append(f"predict/{case.name}")
        elif prefix == "entrypoint" and case.suffix == ".tif":
            keys.append(f"entrypoint/{case.name}")
        elif prefix in ("train", "evaluate") and case.outcome == ERROR and case.suffix in DATASET_SUFFIXES:
            keys.append(f"{prefix}/{case.name}")
    return keys


CHECKPOINT_NAMES = ["empty.pt", "truncated.pt", "random-bytes.pt", "code-in-torch-save.pt", "code-in-pickle.pt",
                    "bare-state-dict.pt", "no-weights.pt", "no-config.pt", "other-model-config.pt",
                    "bad-normalization.pt"]
ALL_KEYS = (_keys("predict") + _keys("entrypoint") + _keys("train") + _keys("evaluate")
            + [f"{entry}/{name}" for entry in CHECKPOINT_ENTRIES for name in CHECKPOINT_NAMES]
            + ["predict/folder-with-symlink-loop", "predict/good-good-bad"])


def check_outcome(item: dict, result: dict) -> None:
    """The contract of one invocation (see the module docstring)."""
    entrypoint = item["kind"] == "entrypoint"
    stderr = result["stderr"]
    context = f"{item['id']}: exit {result['exit_code']}\nstderr: {stderr}\n{result['exception']}"
    assert not result["exception"] and "Traceback" not in stderr + result["stdout"], context
    outputs = [f for folder in item["outputs"] for f in files_under(Path(folder))]
    if item["expect"] == OK:
        assert result["exit_code"] == 0, context
        assert len(outputs) == 1, f"{context}\noutputs: {outputs}"
        output = tifffile.imread(outputs[0])
        assert output.dtype == np.float32 and np.isfinite(output).all()
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    prefix = "w2s-submission: error: " if entrypoint else "w2s: error: "
    assert result["exit_code"] == (1 if entrypoint else 2), context
    assert len(lines) == 1 and lines[0].startswith(prefix), context
    assert item["names"] in lines[0] and item["message"] in lines[0], context
    assert not outputs, f"{context}\nleft behind: {outputs}"


@pytest.mark.parametrize("key", ALL_KEYS)
def test_cli_and_entrypoint(driven, key):
    plan, results, marker = driven
    check_outcome(plan[key], results[key])
    assert not marker.exists(), "a checkpoint's pickled code ran"


def test_the_code_carrying_checkpoint_would_run_code_if_unpickled(tmp_path):
    """The refused payload is live: plain pickle runs it, so the refusal above is what keeps it from running."""
    marker = tmp_path / "ran"
    checkpoint = tiny_checkpoint(tmp_path / "good.pt")
    case = next(c for c in checkpoint_cases(checkpoint, marker) if c.name == "code-in-pickle.pt")
    case.write(tmp_path / case.name)
    pickle.loads((tmp_path / case.name).read_bytes())
    assert marker.exists()


def test_table_counts(driven):
    """Print how many cases ran through each entry point (the figures for the issue's table)."""
    plan, results, _ = driven
    entries: dict[str, int] = {}
    for key in plan:
        entries[key.split("/", 1)[0]] = entries.get(key.split("/", 1)[0], 0) + 1
    print(f"\nbad-input cases: {len(IMAGE_CASES)} image files, {len(CHECKPOINT_NAMES)} checkpoints; invocations: "
          + ", ".join(f"{k} {v}" for k, v in sorted(entries.items())) + f"; total {len(plan)}")
    assert set(plan) == set(ALL_KEYS)


def test_file_named_with_spaces_and_unicode_trains(tmp_path):
    """A paired dataset whose every file has spaces and non-ASCII letters in its name trains end to end."""
    from click.testing import CliRunner

    from w2s.cli import cli

    data = tmp_path / "dätä set"
    for index in range(5):
        for side, folder in enumerate(("inputs", "targets")):
            (data / folder).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(data / folder / f"zelle {index} α ü.tif", good_image(seed=2 * index + side))
    result = CliRunner().invoke(cli, train_args(data, tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "latest").is_file()


# ---------------------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("entry", ["predict", "train-file", "train-folder", "entrypoint"])
def test_unreadable_permission(tmp_path, entry):
    """A file or folder with mode 000, read by a real process for which permission bits apply (as root, without
    the capabilities that override them: see bad_inputs.without_file_override)."""
    prefix_command = without_file_override()
    if prefix_command is None:
        pytest.skip("running as root and util-linux's setpriv is missing, so mode 000 cannot stop the reader")
    checkpoint = tiny_checkpoint(tmp_path / "good.pt")
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, good_image())
    out = tmp_path / "out"
    w2s = str(Path(sys.executable).with_name("w2s"))
    if entry == "predict":
        locked = image
        command = [w2s, "predict", str(image), "--model", str(checkpoint), "--out", str(out), "--device", "cpu",
                   "--quiet"]
        expect, prefix = 2, "w2s: error: "
    elif entry.startswith("train"):
        data = write_dataset(tmp_path / "data", ".tif")
        locked = data / "inputs" / "cell0.tif" if entry == "train-file" else data / "inputs"
        command = [w2s, *train_args(data, out)]
        expect, prefix = 2, "w2s: error: "
    else:
        folder = tmp_path / "input" / "images" / "image-stack-unstructured-noise"
        folder.mkdir(parents=True)
        locked = folder / "case.tif"
        shutil.copyfile(image, locked)
        command = [sys.executable, "-m", "submission.inference", "--input", str(tmp_path / "input"), "--output",
                   str(out), "--model-dir", str(package_dir(checkpoint, tmp_path / "model")), "--device", "cpu"]
        expect, prefix = 1, "w2s-submission: error: "
    os.chmod(locked, 0)
    try:
        result = subprocess.run([*prefix_command, *command], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    finally:
        os.chmod(locked, 0o755)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    context = f"exit {result.returncode}\n{result.stderr}"
    assert result.returncode == expect, context
    assert len(lines) == 1 and lines[0].startswith(prefix) and str(locked) in lines[0], context
    assert "Permission denied" in lines[0], context
    assert not files_under(out), context


# ------------------------------------------------------------------------------------------------- fuzzer



FUZZ = settings(max_examples=150, deadline=None, database=None,  # no .hypothesis folder in the checkout
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEDS = {".tif": tiff_bytes(good_image((3, 24, 20))), ".png": png_bytes((good_image() // 2).astype(np.uint8)),
         ".npy": npy_bytes(good_image().astype(np.float32))}


def read_or_user_error(path: Path) -> None:
    """The fuzzer's property: a valid image array, or UserError naming the file; never another exception."""
    for mmap in (False, True):
        try:
            array = read_image(path, mmap=mmap)
            check_finite(array, path)
        except UserError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            continue
        assert array.ndim >= 2 and min(array.shape) > 0 and array.dtype.kind in "uif"
        np.asarray(array, dtype=np.float32)  # every pixel can be read


@st.composite
def mutated(draw, suffix: str) -> bytes:
    """A valid file with bytes flipped, cut, or inserted: what a flaky disk or a half-finished copy leaves."""
    data = bytearray(SEEDS[suffix])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[position:position + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:  # the header, where sizes and offsets live
            index = draw(st.integers(0, min(len(data), 160) - 1)) if data else 0
            if data:
                data[index] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy"])
def test_fuzz_random_bytes(tmp_path, suffix):
    @FUZZ
    @given(st.binary(max_size=2048))
    def check(data):
        path = tmp_path / f"random{suffix}"
        path.write_bytes(data)
        read_or_user_error(path)

    check()


@pytest.mark.parametrize("suffix", [".tif", ".png", ".npy"])
def test_fuzz_mutated_valid_files(tmp_path, suffix):
    @FUZZ
    @given(mutated(suffix))
    def check(data):
        path = tmp_path / f"mutated{suffix}"
        path.write_bytes(data)
        read_or_user_error(path)

    check()


def test_fuzz_checkpoints(tmp_path):
    """Mutated checkpoints load as a w2s checkpoint or fail with UserError; never another exception."""
    from training.checkpoint import load_model

    seed = tiny_checkpoint(tmp_path / "good.pt").read_bytes()

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(1, 255)), min_size=1, max_size=6),
           st.integers(0, len(seed)))
    def check(flips, cut):
        data = bytearray(seed[:cut] if cut > 16 else seed)
        for position, value in flips:
            if position < len(data):
                data[position] ^= value
        path = tmp_path / "mutated.pt"
        path.write_bytes(bytes(data))
        try:
            load_model(path)
        except UserError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)

    check()
