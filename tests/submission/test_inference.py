"""The container entrypoint, run outside a container: layout, outputs, failure modes, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from submission import inference
from submission.inference import OUTPUT_SUBDIR, main
from submission_fixtures import packaged, stack, write_case  # noqa: F401
from training.checkpoint import load_model
from training.predict import predict_stack

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_main(input_root: Path, output_root: Path, model_dir: Path, *extra: str) -> int:
    return main(["--input", str(input_root), "--output", str(output_root), "--model-dir", str(model_dir),
                 "--device", "cpu", *extra])


SHAPES = {
    "w2s.tiff": ((3, 40, 48), np.int16),
    "hagen.tif": ((72, 56), np.uint16),
    "stack4d.tif": ((2, 2, 24, 32), np.uint16),
    "tiny.tif": ((5, 7), np.uint8),
    "float.tif": ((30, 20), np.float32),
}


def test_every_input_gets_one_float32_output_of_its_shape_equal_to_predict_stack(tmp_path, packaged, capsys):
    arrays = {}
    for index, (name, (shape, dtype)) in enumerate(SHAPES.items()):
        track = "structured" if index % 2 else "unstructured"
        arrays[name] = stack(shape, dtype, low=0 if dtype == np.uint8 else 100, high=250, seed=index)
        write_case(tmp_path / "in", name, arrays[name], track)
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 0

    written = sorted(p.name for p in (tmp_path / "out" / OUTPUT_SUBDIR).iterdir())
    assert written == sorted(f"{Path(n).stem}.tif" for n in SHAPES)  # exactly one each, no temp files left
    loaded = load_model(packaged / "best.pt")
    for name, array in arrays.items():
        path = tmp_path / "out" / OUTPUT_SUBDIR / f"{Path(name).stem}.tif"
        output = tifffile.imread(path)
        assert output.dtype == np.float32 and output.shape == array.shape
        expected = predict_stack(loaded.model, loaded.normalization, array, tile=inference.DEFAULT_TILE)
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
        assert not np.allclose(output, array.astype(np.float32))  # it did something
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].tags["ResolutionUnit"].value == 2  # panimg rejects unit NONE
    out = capsys.readouterr().out
    assert "model ready" in out and out.count("case ") == len(SHAPES)


def test_outputs_match_w2s_predict(tmp_path, packaged):
    """The container's numbers are `w2s predict`'s (what docker-test checks across the container boundary)."""
    from click.testing import CliRunner

    from w2s.cli import cli

    array = stack((2, 48, 40), np.int16, seed=3)
    source = write_case(tmp_path / "in", "case.tif", array)
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 0
    result = CliRunner().invoke(cli, ["predict", str(source), "--model", str(packaged / "best.pt"), "--out",
                                      str(tmp_path / "ref"), "--tile", str(inference.DEFAULT_TILE), "--device", "cpu",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / OUTPUT_SUBDIR / "case.tif"),
                                  tifffile.imread(tmp_path / "ref" / "case.tif"))


def test_large_images_are_tiled_and_still_match(tmp_path, packaged):
    array = stack((100, 90), np.uint16, seed=5)
    write_case(tmp_path / "in", "big.tif", array)
    assert run_main(tmp_path / "in", tmp_path / "out", packaged, "--tile", "48") == 0
    loaded = load_model(packaged / "best.pt")
    expected = predict_stack(loaded.model, loaded.normalization, array, tile=48)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / OUTPUT_SUBDIR / "big.tif"), expected, rtol=1e-5,
                               atol=1e-3)


def test_no_input_is_a_clear_non_zero_exit(tmp_path, packaged, capsys):
    (tmp_path / "in" / "images" / "something-else").mkdir(parents=True)
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 1
    err = capsys.readouterr().err
    assert "no input images" in err and "image-stack-*-noise" in err and "something-else" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / OUTPUT_SUBDIR).exists()
    assert run_main(tmp_path / "missing", tmp_path / "out", packaged) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unreadable_tiff_is_named_skipped_and_fails_the_run(tmp_path, packaged, capsys):
    write_case(tmp_path / "in", "good.tif", stack((32, 32)))
    bad = tmp_path / "in" / "images" / "image-stack-unstructured-noise" / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"garbage" * 10)
    empty = bad.with_name("empty.tiff")
    empty.write_bytes(b"")
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and str(empty) in err and "Traceback" not in err
    assert [p.name for p in (tmp_path / "out" / OUTPUT_SUBDIR).iterdir()] == ["good.tif"]


def test_nan_input_is_refused(tmp_path, packaged, capsys):
    image = stack((16, 16), np.float32)
    image[3, 4] = np.nan
    write_case(tmp_path / "in", "nan.tif", image)
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 1
    assert "nan.tif" in capsys.readouterr().err
    assert not (tmp_path / "out" / OUTPUT_SUBDIR / "nan.tif").exists()


def test_two_inputs_with_one_output_name_are_refused_before_any_work(tmp_path, packaged, capsys):
    write_case(tmp_path / "in", "a.tif", stack((16, 16)), "unstructured")
    write_case(tmp_path / "in", "a.tiff", stack((16, 16)), "structured")
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 1
    assert "would both be written" in capsys.readouterr().err
    assert not (tmp_path / "out" / OUTPUT_SUBDIR).exists()


def test_roots_and_model_come_from_environment_variables(tmp_path, packaged, monkeypatch):
    write_case(tmp_path / "in", "x.tif", stack((16, 24)))
    monkeypatch.setenv("W2S_INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("W2S_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("W2S_MODEL_DIR", str(packaged))
    monkeypatch.setenv("W2S_DEVICE", "cpu")
    assert main([]) == 0
    assert (tmp_path / "out" / OUTPUT_SUBDIR / "x.tif").is_file()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "best.pt").unlink(), "model file missing"),
    (lambda d: (d / "best.pt").write_bytes((d / "best.pt").read_bytes()[:-10] + b"0123456789"), "checksum mismatch"),
    (lambda d: (d / "manifest.json").unlink(), "manifest missing"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"format": "other"})), "not a w2s submission manifest"),
])
def test_a_missing_or_corrupt_model_fails_the_self_check(tmp_path, packaged, capsys, damage, message):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(packaged, model)
    assert main(["--self-check", "--model-dir", str(model)]) == 0
    damage(model)
    assert main(["--self-check", "--model-dir", str(model)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_model_folder_says_how_to_make_one(tmp_path, capsys):
    write_case(tmp_path / "in", "x.tif", stack((16, 16)))
    assert run_main(tmp_path / "in", tmp_path / "out", tmp_path / "nope") == 1
    assert "w2s package" in capsys.readouterr().err


def test_outputs_are_imported_by_panimg(tmp_path, packaged):
    """Grand Challenge imports outputs with panimg; a TIFF without a resolution unit is rejected."""
    pytest.importorskip("panimg")
    from submission.docker_test import panimg_import

    write_case(tmp_path / "in", "w2s.tiff", stack((3, 32, 40), np.int16))
    write_case(tmp_path / "in", "plain.tif", stack((40, 32)), "structured")
    assert run_main(tmp_path / "in", tmp_path / "out", packaged) == 0
    verdict = panimg_import(tmp_path / "out" / OUTPUT_SUBDIR)
    assert len(verdict) == 2 and all(why == "" for why in verdict.values()), verdict

    bare = tmp_path / "bare"
    bare.mkdir()
    tifffile.imwrite(bare / "nounit.tif", np.zeros((16, 16), np.float32))
    assert "Voxel width" in panimg_import(bare)[bare / "nounit.tif"]


def test_inference_imports_only_its_declared_requirements(tmp_path, packaged):
    """The image holds torch, numpy, tifffile, tqdm and their dependencies only (submission/requirements.txt)."""
    write_case(tmp_path / "in", "x.tif", stack((16, 16)))
    script = (
        "import sys, importlib.metadata as md\n"
        "from submission.inference import main\n"
        f"code = main(['--input', {str(tmp_path / 'in')!r}, '--output', {str(tmp_path / 'out')!r}, "
        f"'--model-dir', {str(packaged)!r}, '--device', 'cpu'])\n"
        "dists = md.packages_distributions()\n"
        "used = sorted({d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])})\n"
        "print('DISTS', code, ' '.join(used))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    line = next(line for line in result.stdout.splitlines() if line.startswith("DISTS"))
    code, *used = line.split()[1:]
    assert code == "0"
    allowed = _allowed_distributions()
    extra = {d for d in used if _canonical(d) not in allowed}
    assert not extra, f"the inference path imports {sorted(extra)}, which the image does not install"


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed_distributions() -> set[str]:
    """requirements.txt, their installed dependencies (transitively), the project itself, and tifffile's optional
    imagecodecs and setuptools (imported when present, not needed)."""
    import importlib.metadata as md
    import re

    lines = (REPO_ROOT / "submission" / "requirements.txt").read_text().splitlines()
    todo = [re.match(r"[A-Za-z0-9_.-]+", line.strip()).group(0) for line in lines
            if line.strip() and not line.strip().startswith("#")]
    allowed, seen = {"w2s-denoise", "imagecodecs", "setuptools"}, set()
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        allowed.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requires if "extra ==" not in r]
    return allowed
