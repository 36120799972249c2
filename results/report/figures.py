"""Plotting primitives of the report: figures on the Agg canvas, one style per series, labels that do
not overlap.

Plots are drawn on ``Figure`` objects with the Agg canvas, never through pyplot, so importing the report
leaves an interactive session's backend alone and works without a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# Beyond this many candidates a plot names only the Pareto front and the size bars show a sample:
# a thousand labels or bars are unreadable, and slow to draw.
PLOT_DETAIL_LIMIT = 40
# Where a label may sit around its point (points right/up of it); tried in order, nearest first.
LABEL_OFFSETS = [(4, 3), (4, -9), (-4, 3), (-4, -9), (4, 12), (4, -18), (-4, 12), (-4, -18), (4, 21), (4, -27),
                 (-4, 21), (-4, -27), (4, 30), (4, -36)]


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    # No Software/date metadata, so the same rows give the same file on the same matplotlib.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})


def tab10() -> tuple:
    from matplotlib import colormaps

    return colormaps["tab10"].colors


def styles(series: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """A (marker, colour) per series name, in sorted order of the names."""
    colours = tab10()
    return {s: (MARKERS[i % len(MARKERS)], colours[i % len(colours)]) for i, s in enumerate(sorted(set(series)))}


def place_labels(ax, labels: list[tuple[float, float, str]], fontsize: float) -> None:
    """Name each point without two names overlapping where it can be helped: greedily, densest region
    first, each label takes the first offset whose box (estimated from its length) is free; a label far
    from its point gets a thin leader line."""
    ax.figure.canvas.draw()  # fixes the axis limits, so data map to final display points
    to_points = ax.transData.transform
    scale = 72.0 / ax.figure.dpi
    width_per_char, height = 0.6 * fontsize, 1.25 * fontsize  # generous: DejaVu Sans at this size
    placed: list[tuple[float, float, float, float]] = []
    anchored = sorted(((*(to_points((x, y)) * scale), x, y, text) for x, y, text in labels), key=lambda a: a[:2])
    for px, py, x, y, text in anchored:
        width = width_per_char * len(text)
        best, best_overlap = LABEL_OFFSETS[0], math.inf
        for dx, dy in LABEL_OFFSETS:
            left = px + dx if dx >= 0 else px + dx - width
            box = (left, py + dy, left + width, py + dy + height)
            overlap = sum(max(0.0, min(box[2], o[2]) - max(box[0], o[0])) * max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
                          for o in placed)
            if overlap < best_overlap:
                best, best_overlap, best_box = (dx, dy), overlap, box
            if overlap == 0:
                break
        placed.append(best_box)
        dx, dy = best
        far = abs(dy) > 10
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha="left" if dx >= 0 else "right",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5} if far else None)
