"""The pictures logged to MLflow: before/after panels and the loss / quality-per-minute curve."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from skimage.io import imread

from training.visualize import display_range, loss_curve_figure, loss_curve_png, panel, to_uint8


def _history(with_targets=True, with_minutes=True):
    history = []
    for epoch in (1, 2, 3):
        record = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch}
        if with_minutes:
            record["train_minutes"] = 2.5 * epoch
        if with_targets:
            record |= {"val_psnr": 20.0 + epoch, "val_si_psnr": 25.0 + epoch, "noisy_psnr": 18.0}
        history.append(record)
    return history


def test_display_range_and_uint8_mapping():
    image = np.arange(1000, dtype=np.float32)
    lo, hi = display_range(image)
    assert lo == pytest.approx(np.percentile(image, 0.5)) and hi == pytest.approx(np.percentile(image, 99.8))
    assert display_range(np.full((4, 4), 7.0))[1] > 7.0  # a flat image still gets a non-empty range
    mapped = to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), (0.0, 1.0))
    assert mapped.dtype == np.uint8 and mapped.tolist() == [0, 0, 127, 255, 255]


def test_panel_places_images_side_by_side_with_white_gaps():
    a, b = np.zeros((8, 5)), np.ones((6, 3))
    picture = panel([a, b], [(0.0, 1.0), (0.0, 1.0)], gap=2)
    assert picture.shape == (8, 5 + 2 + 3) and picture.dtype == np.uint8
    assert (picture[:, :5] == 0).all()
    assert (picture[:, 5:7] == 255).all()  # the gap
    assert (picture[:6, 7:] == 255).all() and (picture[6:, 7:] == 255).all()  # b, then padding below it


def test_loss_curve_plots_quality_against_training_minutes():
    history = _history()
    fig = loss_curve_figure(history)
    ax_loss, ax_quality = fig.axes
    assert [list(line.get_xdata()) for line in ax_loss.lines] == [[1, 2, 3], [1, 2, 3]]
    assert list(ax_loss.lines[0].get_ydata()) == [h["train_loss"] for h in history]
    assert ax_quality.get_xlabel() == "training minutes"
    si_psnr = next(line for line in ax_quality.lines if line.get_label() == "SI-PSNR")
    assert list(si_psnr.get_xdata()) == [2.5, 5.0, 7.5]
    assert list(si_psnr.get_ydata()) == [26.0, 27.0, 28.0]
    assert "noisy input PSNR" in [line.get_label() for line in ax_quality.lines]
    plt.close(fig)


def test_loss_curve_without_targets_or_minutes():
    """Noise2Void on noisy-only data has no image scores; old checkpoints have no train_minutes."""
    fig = loss_curve_figure(_history(with_targets=False, with_minutes=False))
    ax_loss, ax_quality = fig.axes
    assert len(ax_loss.lines) == 2 and not ax_quality.lines
    assert ax_quality.get_xlabel() == "epoch"
    plt.close(fig)


def test_loss_curve_png_is_a_readable_picture(tmp_path):
    path = tmp_path / "loss_curve.png"
    loss_curve_png(path, _history())
    picture = imread(path)
    assert picture.shape[:2] == (350, 900)  # 9 x 3.5 inches at 100 dpi
    assert picture.std() > 0
