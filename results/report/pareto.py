"""Pareto fronts of accuracy against Flash: x (Flash) minimised, y (accuracy) maximised."""

from __future__ import annotations

import math

from results.report.cells import num, strategy


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of points no other point dominates; x is minimised, y maximised.

    A point dominates another when it is no worse in both and better in one, so exact duplicates of a
    front point are all kept. Points with a NaN coordinate are never on the front.
    """
    valid = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    order = sorted(valid, key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = -math.inf  # best y among strictly smaller x
    start = 0
    while start < len(order):
        x = points[order[start]][0]
        end = start
        while end < len(order) and points[order[end]][0] == x:
            end += 1
        group_best = points[order[start]][1]
        if group_best > best_y:
            front.extend(i for i in order[start:end] if points[i][1] == group_best)
            best_y = group_best
        start = end
    return sorted(front)


def strategy_fronts(rows: list[dict]) -> dict[str, list[dict]]:
    """Each strategy's own Pareto front (int8 accuracy vs Flash), sorted by Flash."""
    fronts = {}
    for each in sorted({strategy(r) for r in rows}):
        members = [r for r in rows if strategy(r) == each and num(r.get("flash_bytes")) is not None
                   and num(r.get("accuracy_int8")) is not None]
        front = [members[i] for i in pareto_front([(float(r["flash_bytes"]), float(r["accuracy_int8"]))
                                                   for r in members])]
        if front:
            fronts[each] = sorted(front, key=lambda r: (r["flash_bytes"], -r["accuracy_int8"]))
    return fronts
