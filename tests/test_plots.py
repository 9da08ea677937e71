import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from digitlab import plots

DIGITS = [str(i) for i in range(10)]
FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _ring(radius: float) -> np.ndarray:
    """A 28x28 uint8 ring, a stand-in for a handwritten zero."""
    yy, xx = np.mgrid[:28, :28]
    distance = np.hypot(yy - 13.5, xx - 13.5)
    return np.where(np.abs(distance - radius) < 2, 255, 0).astype(np.uint8)


@pytest.fixture
def digits() -> np.ndarray:
    return np.stack([_ring(4 + i % 6) for i in range(12)])


def _assert_png_with_content(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 100 and img.height > 100
        pixels = np.asarray(img.convert("L"))
    # Not a blank page: both dark and light pixels, and more than a handful of shades.
    assert pixels.min() < 50 and pixels.max() > 200
    assert len(np.unique(pixels)) > 5
    return pixels


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_save_digit_writes_white_on_black_grayscale_png(tmp_path, digits):
    written = plots.save_digit(digits[0], tmp_path / "digit.png", title="5")

    assert written == tmp_path / "digit.png"
    pixels = _assert_png_with_content(written)
    # The image fills most of the figure: a black background, not the default colormap's purple.
    with Image.open(written) as img:
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    assert (rgb.max(axis=1) - rgb.min(axis=1)).max() < 10, "expected gray pixels only"
    assert (pixels < 10).mean() > 0.3


def _grid_cells(fig) -> list[tuple[str, np.ndarray]]:
    """(title, image) of each digit `plots._grid_figure` drew into its one mosaic, in order."""
    (ax,) = fig.axes
    mosaic = ax.images[0].get_array()  # NaN (blank) pixels come back masked
    cells = []
    for text in ax.texts:
        x, y = text.get_position()
        top = math.ceil(y)  # the title sits just above its digit: the first inked row below
        while top < mosaic.shape[0] and np.ma.is_masked(mosaic[top, round(x)]):
            top += 1
        left = round(x - 14)
        cells.append((text.get_text(), np.asarray(mosaic[top : top + 28, left : left + 28])))
    return cells


def test_save_digit_grid_titles_each_digit_and_leaves_spare_cells_blank(tmp_path, digits):
    fig = plots._grid_figure(digits[:5], list("01234"), rows=2, cols=4, title="Samples")

    cells = _grid_cells(fig)
    assert [title for title, _ in cells] == list("01234")
    for (_, drawn), digit in zip(cells, digits[:5], strict=True):
        np.testing.assert_array_equal(drawn, digit)  # each digit under its own title
    (ax,) = fig.axes
    assert not ax.axison
    mosaic = ax.images[0].get_array()
    assert np.ma.count(mosaic) == 5 * 28 * 28, "the three spare cells stay blank"
    assert fig.get_suptitle() == "Samples"
    written = plots.save_digit_grid(
        digits[:5], list("01234"), tmp_path / "grid.png", rows=2, cols=4
    )
    _assert_png_with_content(written)


def test_confusion_matrix_writes_every_count_in_its_cell():
    cm = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])

    fig = plots._confusion_figure(cm, DIGITS, title="Confusion matrix")

    ax = fig.axes[0]
    by_cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(by_cell) == 100
    for (i, j), count in np.ndenumerate(cm):
        assert by_cell[i, j].get_text() == str(count)
    assert ax.get_xlabel() == "Predicted label"
    assert ax.get_ylabel() == "True label"
    assert [t.get_text() for t in ax.get_xticklabels()] == DIGITS
    assert [t.get_text() for t in ax.get_yticklabels()] == DIGITS
    assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())


def test_confusion_matrix_text_contrasts_with_its_cell():
    cm = np.array([[50, 0], [3, 47]])
    fig = plots._confusion_figure(cm, ["a", "b"], title="t")
    image = fig.axes[0].images[0]

    for text in fig.axes[0].texts:
        x, y = (round(v) for v in text.get_position())
        cell = np.array(image.cmap(image.norm(cm[y, x]))[:3])
        weights = np.array([0.299, 0.587, 0.114])
        assert abs(cell @ weights - np.array(to_rgb(text.get_color())) @ weights) > 0.4


def test_confusion_matrix_rotates_long_class_names(tmp_path):
    cm = np.arange(100).reshape(10, 10)

    fig = plots._confusion_figure(cm, FASHION, title="Fashion")

    labels = fig.axes[0].get_xticklabels()
    assert [t.get_text() for t in labels] == FASHION
    assert all(t.get_rotation() > 0 for t in labels)
    _assert_png_with_content(plots.save_confusion_matrix(cm, FASHION, tmp_path / "cm.png"))


def test_misclassified_titles_say_true_predicted_and_confidence(tmp_path, digits):
    true = np.array([4, 7, 1])
    predicted = np.array([9, 1, 7])
    confidence = np.array([0.87, 0.5, 0.123])

    fig = plots._misclassified_figure(digits[:3], true, predicted, DIGITS, confidence, 36)

    titles = [title for title, _ in _grid_cells(fig)]
    assert titles == ["true 4 → pred 9 (0.87)", "true 7 → pred 1 (0.50)", "true 1 → pred 7 (0.12)"]
    written = plots.save_misclassified(
        digits[:3], true, predicted, DIGITS, tmp_path / "wrong.png", probabilities=confidence
    )
    _assert_png_with_content(written)


def test_misclassified_takes_predicted_class_probability_from_full_softmax(digits):
    probabilities = np.full((2, 10), 0.01)
    probabilities[0, 9] = 0.91
    probabilities[1, 2] = 0.64

    fig = plots._misclassified_figure(
        digits[:2], np.array([4, 3]), np.array([9, 2]), FASHION, probabilities, 36
    )

    titles = [title for title, _ in _grid_cells(fig)]
    assert titles == ["true Coat → pred Ankle boot (0.91)", "true Dress → pred Pullover (0.64)"]


def test_misclassified_shows_at_most_max_images(digits):
    labels = np.zeros(12, dtype=int)

    fig = plots._misclassified_figure(digits, labels, labels + 1, DIGITS, None, 5)

    titles = [title for title, _ in _grid_cells(fig)]
    assert titles == ["true 0 → pred 1"] * 5
    assert fig.get_suptitle() == "5 of 12 misclassified"


def test_misclassified_with_none_says_so(tmp_path):
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    no_labels = np.zeros(0, dtype=int)

    fig = plots._misclassified_figure(empty, no_labels, no_labels, DIGITS, None, 36)
    assert _texts(fig) == ["no misclassified digits"]

    written = plots.save_misclassified(empty, no_labels, no_labels, DIGITS, tmp_path / "none.png")
    with Image.open(written) as img:
        assert img.format == "PNG"
        assert np.asarray(img.convert("L")).min() < 100, "the message is drawn"


def test_training_curves_put_loss_then_accuracy_then_other_metrics_from_epoch_1(tmp_path):
    history = {
        "accuracy": [0.8, 0.9, 0.95],
        "loss": [0.6, 0.3, 0.2],
        "precision": [0.7, 0.8, 0.9],
        "val_accuracy": [0.85, 0.9, 0.93],
        "val_loss": [0.4, 0.3, 0.25],
        "val_precision": [0.8, 0.85, 0.9],
    }

    fig = plots._curves_figure(history)

    panels = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in panels] == ["loss", "accuracy", "precision"]
    for ax in panels:
        assert [line.get_label() for line in ax.lines] == ["train", "validation"]
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
        assert ax.get_legend() is not None
        assert ax.get_xlabel() == "epoch"
    assert list(panels[0].lines[1].get_ydata()) == history["val_loss"]
    _assert_png_with_content(plots.save_training_curves(history, tmp_path / "curves.png"))


def test_training_curves_without_validation_and_single_epoch_still_draw(tmp_path):
    history = {"loss": [0.5], "accuracy": [0.86]}

    fig = plots._curves_figure(history)

    panels = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in panels] == ["loss", "accuracy"]
    for ax in panels:
        (line,) = ax.lines
        assert line.get_label() == "train"
        assert list(line.get_xdata()) == [1]
        assert line.get_marker() not in (None, "None", "", " ")
        low, high = ax.get_xlim()
        assert [tick for tick in ax.get_xticks() if low <= tick <= high] == [1]
    _assert_png_with_content(plots.save_training_curves(history, tmp_path / "one.png"))


def test_training_curves_with_empty_history_say_so():
    assert _texts(plots._curves_figure({})) == ["no training history"]


def test_terminal_digit_draws_full_blocks_for_ink_and_spaces_for_background():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[3, 5] = 255
    image[10:20, 14] = 255

    lines = plots.terminal_digit(image).split("\n")

    assert len(lines) == 28
    assert all(len(line) == 56 for line in lines)
    for (row, col), value in np.ndenumerate(image):
        assert lines[row][2 * col : 2 * col + 2] == ("██" if value == 255 else "  ")


def test_terminal_digit_shades_get_denser_with_intensity():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[0, :5] = [0, 64, 128, 192, 255]

    first_line = plots.terminal_digit(image).split("\n")[0]

    assert first_line[:10] == "  ░░▒▒▓▓██"


def test_save_leaves_only_the_png_behind(tmp_path, digits):
    plots.save_digit(digits[0], tmp_path / "digit.png", title="0")

    assert [p.name for p in tmp_path.iterdir()] == ["digit.png"]


def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, digits, monkeypatch):
    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)

    with pytest.raises(OSError, match="disk full"):
        plots.save_digit(digits[0], tmp_path / "new.png", title="0")
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "old.png").write_bytes(b"previous figure")
    with pytest.raises(OSError, match="disk full"):
        plots.save_digit(digits[0], tmp_path / "old.png", title="0")
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"previous figure"


def test_importing_plots_pulls_in_neither_pyplot_nor_keras():
    code = (
        "import sys, digitlab.plots; "
        "print(sorted({'matplotlib.pyplot', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(plots.__file__).parents[1],
    )
    assert result.stdout.strip() == "[]"
