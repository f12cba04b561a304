"""Tiled prediction: faithful to whole-image prediction, any shape, units preserved, models found anywhere."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from evaluation_fixtures import no_repo_mlflow, save_tiny_checkpoint, tiny_model, trained_run, w2s_data  # noqa: F401
from training.data.normalization import Normalization
from training.errors import UserError
from training.predict import (blend_window, default_overlap, local_checkpoint_path, predict_image, predict_stack,
                              receptive_radius, resolve_model, seam_mask, tile_starts, tiled_predict)

# Documented bound at the seams, relative to the output's range (README, "Prediction"). Measured: 2.5e-3 for
# these random networks, see the test; the trained W2S model's is in the README.
SEAM_BOUND = 1e-2
EXACT = 1e-4


def _relative_error(tiled, whole):
    return np.abs(tiled - whole) / (whole.max() - whole.min())


@pytest.mark.parametrize("depth, shape, tile", [(2, (203, 229), 128), (3, (150, 420), 192)])
def test_tiled_equals_whole_image_away_from_seams_and_is_bounded_at_them(depth, shape, tile):
    torch.set_num_threads(1)
    model = tiny_model(depth=depth, base_channels=4, residual=False)  # the network's output is all there is
    image = (np.random.default_rng(0).random(shape) * 200 + 50).astype(np.float32)
    normalization = Normalization()
    whole = predict_image(model, normalization, image)
    tiled = tiled_predict(model, normalization, image, tile=tile, batch_size=3)
    seams = seam_mask(shape, model.config, tile)
    error = _relative_error(tiled, whole)
    assert tiled.shape == shape and tiled.dtype == np.float32
    assert 0.1 < seams.mean() < 0.9  # both regions are tested
    assert error[~seams].max() < EXACT
    assert error[seams].max() < SEAM_BOUND


def test_an_image_within_one_tile_is_predicted_whole():
    model = tiny_model()
    image = np.random.default_rng(1).random((37, 45)).astype(np.float32)
    np.testing.assert_allclose(tiled_predict(model, Normalization(), image, tile=64),
                               predict_image(model, Normalization(), image), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(37, 45), (2, 50, 61), (2, 3, 40, 33), (1, 1, 9, 130)])
def test_predict_stack_keeps_shape_and_predicts_slice_by_slice(shape):
    model = tiny_model()
    array = np.random.default_rng(2).integers(90, 460, size=shape).astype(np.int16)  # challenge-like counts
    out = predict_stack(model, Normalization(), array, tile=64)
    assert out.shape == shape and out.dtype == np.float32
    flat_in, flat_out = array.reshape(-1, *shape[-2:]), out.reshape(-1, *shape[-2:])
    for index in range(len(flat_in)):
        np.testing.assert_allclose(flat_out[index], tiled_predict(model, Normalization(), flat_in[index], tile=64),
                                   rtol=0, atol=1e-5)


def test_normalization_uses_the_whole_image_and_is_inverted():
    model = tiny_model(residual=True)
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)  # output = input in normalized units: the round trip must be exact
    image = np.full((200, 200), 1000, np.uint16)
    image[:20, :20] = 60000  # one tile sees only background; per-tile statistics would break the identity
    image += np.random.default_rng(3).integers(0, 50, image.shape).astype(np.uint16)
    out = tiled_predict(model, Normalization(), image, tile=64)
    np.testing.assert_allclose(out, image.astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_radius_bounds_the_real_receptive_field(depth):
    model = tiny_model(depth=depth, base_channels=2, residual=False)
    x = torch.zeros(1, 1, 192, 192, requires_grad=True)
    y = model(x + torch.randn(1, 1, 192, 192))
    for cy, cx in ((96, 96), (99, 101), (103, 94)):
        x.grad = None
        y[0, 0, cy, cx].backward(retain_graph=True)
        reach = np.abs(np.argwhere(x.grad[0, 0].numpy() != 0) - (cy, cx)).max()
        assert reach <= receptive_radius(model.config)
    assert default_overlap(model.config) % 2**depth == 0


def test_tile_grid_is_aligned_and_blend_weights_are_complementary():
    starts = tile_starts(1000, 256, 72, 8)
    assert starts[0] == 0 and starts[-1] == 1000 - 256 and all(s % 8 == 0 for s in starts)
    assert all(b - a <= 256 - 72 for a, b in zip(starts, starts[1:]))
    left, right = blend_window(256, 72, False, True), blend_window(256, 72, True, False)
    np.testing.assert_allclose(left[-72:] + right[:72], 1.0)
    assert left.min() > 0 and right.min() > 0


def test_tile_smaller_than_overlap_is_a_user_error():
    with pytest.raises(UserError, match="too small"):
        tiled_predict(tiny_model(), Normalization(), np.zeros((300, 300), np.float32), tile=16, overlap=32)


def test_resolve_model_from_file_run_folder_and_latest(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "run" / "best.pt")
    (tmp_path / "latest").write_text(str((tmp_path / "run").resolve()))
    for spec in (checkpoint, tmp_path / "run", tmp_path / "latest"):
        assert local_checkpoint_path(spec) == checkpoint
        assert resolve_model(spec).config.model.depth == 2
    with pytest.raises(UserError, match="not found"):
        resolve_model(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        resolve_model(tmp_path / "junk.pt")


def test_resolve_model_from_mlflow_uris(trained_run):
    run_id, uri = trained_run["result"].run_id, trained_run["uri"]
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    version = client.search_model_versions("name='w2s-unet'")[0].version
    client.set_registered_model_alias("w2s-unet", "candidate", version)
    for spec in (f"runs:/{run_id}/model", "models:/w2s-unet@candidate", f"models:/w2s-unet/{version}",
                 f"runs:/{run_id}", f"runs:/{run_id}/checkpoints/best.pt"):
        loaded = resolve_model(spec, uri)
        assert loaded.checkpoint["mlflow_run_id"] == run_id
    with pytest.raises(UserError, match="models:/w2s-unet@nope"):
        resolve_model("models:/w2s-unet@nope", uri)
    with pytest.raises(UserError, match="runs:/0123/model"):
        resolve_model("runs:/0123/model", uri)


def test_cli_predict_writes_float32_tiffs_of_the_same_shape(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from w2s.cli import cli

    checkpoint = save_tiny_checkpoint(tmp_path / "best.pt")
    rng = np.random.default_rng(4)
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(90, 460, (3, 70, 90)).astype(np.int16))
    Image.fromarray(rng.integers(0, 255, (50, 60)).astype(np.uint8)).save(tmp_path / "image.png")
    np.save(tmp_path / "planes.npy", rng.random((2, 2, 33, 40)).astype(np.float32))
    inputs = [str(tmp_path / n) for n in ("stack.tif", "image.png", "planes.npy")]
    result = CliRunner().invoke(cli, ["predict", *inputs, "--model", str(checkpoint), "--out", str(tmp_path / "out"),
                                      "--tile", "64", "--quiet"])
    assert result.exit_code == 0, result.output
    for name, shape in (("stack", (3, 70, 90)), ("image", (50, 60)), ("planes", (2, 2, 33, 40))):
        with tifffile.TiffFile(tmp_path / "out" / f"{name}.tif") as tif:
            array = tif.asarray()
            assert tif.pages[0].tags["ResolutionUnit"].value == 2  # Grand Challenge rejects unit NONE
        assert array.shape == shape and array.dtype == np.float32


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p / "missing.pt", "not found"),
    (lambda p: (p / "bad.pt").write_text("nope") and p / "bad.pt", "bad.pt"),
])
def test_cli_predict_bad_model_is_one_line_exit_2(tmp_path, make_bad, message):
    from click.testing import CliRunner

    from w2s.cli import cli

    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "x.npy"), "--model", str(make_bad(tmp_path)),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
