"""Change points in a nightly series, as conbench's lookback test finds them: each new point is tested
against the recent window of points before it (back to the last change point at most). A point is a
change when it moves past the metric's threshold (``results.regress.METRICS``: relative or absolute)
from the window's mean and, for a noisy metric, lies more than ``Z_LIMIT`` standard deviations from it;
a deterministic metric changes with any move past its threshold from the point before."""

from __future__ import annotations

import statistics

WINDOW = 5  # points of the recent window
MIN_WINDOW = 3  # a noisy metric is tested once its window has this many points
Z_LIMIT = 5.0


def change_points(values: list[float], deterministic: bool, threshold: float, relative: bool = True) -> list[int]:
    """Indices of the points of ``values`` (in time order) that are change points."""
    points, start = [], 0
    for index in range(1, len(values)):
        window = values[max(start, index - WINDOW):index]
        if not window or (not deterministic and len(window) < MIN_WINDOW):
            continue
        reference = window[-1] if deterministic else statistics.fmean(window)
        move = values[index] - reference
        size = abs(move) / abs(reference) if relative and reference else abs(move)
        if size <= threshold or move == 0:
            continue
        spread = 0.0 if deterministic else statistics.stdev(window)
        if deterministic or spread == 0 or abs(move) / spread > Z_LIMIT:
            points.append(index)
            start = index
    return points
