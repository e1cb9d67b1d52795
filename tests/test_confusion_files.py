"""The confusion matrix written out: the CSV holds the counts under the class names; the figure shows
the row fractions with every class name legible, for Cityscapes' 19 classes and ADE20K's 150."""
import csv

import numpy as np
import pytest
import torch

from dataset.ade20k import CLASS_NAMES as ADE20K_NAMES
from dataset.cityscapes_labels import CLASS_NAMES as CITYSCAPES_NAMES
from utils.confusion_files import DPI, cell_inches, confusion_figure, write_confusion_csv


def test_csv_rows_are_true_classes_and_columns_predicted_ones(tmp_path):
    counts = torch.tensor([[5, 0, 1], [2, 7, 0], [0, 0, 0]])
    write_confusion_csv(counts, ["road", "traffic light, sign", "sky"], tmp_path / "m.csv")
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["true \\ predicted", "road", "traffic light, sign", "sky"],
                    ["road", "5", "0", "1"], ["traffic light, sign", "2", "7", "0"], ["sky", "0", "0", "0"]]


def random_fractions(k):
    """(k, k) rows summing to 1, heavy on the diagonal, the last row NaN (a class never labelled)."""
    g = np.random.default_rng(0)
    counts = g.integers(0, 10, (k, k)) + np.diag(g.integers(50, 500, k))
    fractions = counts / counts.sum(1, keepdims=True)
    fractions[-1] = np.nan
    return fractions


def spans_overlap(spans):
    """Whether any two of the (start, end) intervals, in drawing order, overlap."""
    spans = sorted(spans)
    return any(next_start < end for (_, end), (next_start, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("names", [CITYSCAPES_NAMES, ADE20K_NAMES], ids=["19 classes", "150 classes"])
def test_figure_shows_the_fractions_with_every_name_legible_beside_its_cell(names):
    k = len(names)
    fractions = random_fractions(k)
    figure = confusion_figure(fractions, names)
    ax = figure.axes[0]
    shown = ax.images[0].get_array()
    assert np.array_equal(shown.mask, np.isnan(fractions)) and np.array_equal(shown.filled(-1),
                                                                              np.nan_to_num(fractions, nan=-1))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    cell = cell_inches(k) * DPI  # pixels
    rows, columns = ax.get_yticklabels(), ax.get_xticklabels()
    assert [t.get_text() for t in rows] == list(names) == [t.get_text() for t in columns]
    assert min(t.get_fontsize() for t in rows + columns) >= 6
    row_boxes = [t.get_window_extent(renderer) for t in rows]
    column_boxes = [t.get_window_extent(renderer) for t in columns]
    assert max(box.height for box in row_boxes) <= cell and max(box.width for box in column_boxes) <= cell
    assert not spans_overlap([(box.y0, box.y1) for box in row_boxes])
    assert not spans_overlap([(box.x0, box.x1) for box in column_boxes])
