"""An evaluation's confusion matrix written out: the counts as CSV, the row-normalized matrix as a PNG.

The figure is drawn with matplotlib's Agg canvas directly (no pyplot, no global backend), imported
only when a figure is asked for. Its cells, fonts and size scale with the class count, so that the
names stay legible for Cityscapes' 19 classes and fit their rows for ADE20K's 150. The colours
follow the square root of the fraction, so that a confusion of a few percent is seen beside the
diagonal's large fractions.
"""
import csv

import numpy as np

CORNER = "true \\ predicted"  # the CSV's top-left cell: rows are true classes, columns predicted ones
MAX_MATRIX_INCHES = 24  # the matrix's side once the class count would make it larger at full cell size
MAX_CELL_INCHES = 0.45
MAX_FONT_POINTS = 10
ANNOTATED_UP_TO = 40  # classes up to which each cell shows its percentage
DPI = 150


def write_confusion_csv(matrix, names, path):
    """Write the (k, k) integer counts with a header row and a first column of the k class names."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([CORNER, *names])
        for name, row in zip(names, matrix.tolist()):
            writer.writerow([name, *row])


def cell_inches(num_classes):
    """Side of one cell: MAX_CELL_INCHES until the matrix would outgrow MAX_MATRIX_INCHES, then smaller."""
    return min(MAX_CELL_INCHES, MAX_MATRIX_INCHES / num_classes)


def confusion_figure(fractions, names):
    """A matplotlib Figure of the (k, k) row fractions (NaN rows grey) with the names on both axes."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    k = len(names)
    side = k * cell_inches(k)  # the matrix's axes fill the figure; labels and colour bar lie outside it
    font = min(MAX_FONT_POINTS, 0.6 * 72 * side / k)  # text about 60% of a cell's height
    label_font = max(font, 8)
    figure = Figure(figsize=(side, side))
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    values = np.ma.masked_invalid(np.asarray(fractions, dtype=np.float64))  # (k, k), rows of NaN masked
    image = ax.imshow(values, cmap=colormaps["Blues"].with_extremes(bad="0.85"),
                      norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    bar = figure.colorbar(image, cax=figure.add_axes((1 + 0.15 / side, 0, 0.25 / side, 1)))
    bar.ax.tick_params(labelsize=label_font)
    ax.set_xticks(range(k), labels=names, rotation=90, fontsize=font)
    ax.set_yticks(range(k), labels=names, fontsize=font)
    ax.set_xlabel("predicted class", fontsize=label_font)
    ax.set_ylabel("true class", fontsize=label_font)
    ax.set_title("confusion matrix, each row as fractions of the true class's pixels", fontsize=label_font)
    if k <= ANNOTATED_UP_TO:
        for (i, j), value in np.ndenumerate(values.filled(0)):
            if round(100 * value) >= 1:
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=0.8 * font,
                        color="white" if value > 0.3 else "black")
    return figure


def save_confusion_figure(fractions, names, path):
    """Draw confusion_figure(fractions, names) into the PNG at path, grown to hold the labels and colour bar."""
    confusion_figure(fractions, names).savefig(path, dpi=DPI, bbox_inches="tight")
