"""The report's figures of candidates: accuracy against Flash, the size figures, the weight norm during
finetuning and the searched per-layer decisions."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib.lines import Line2D

from results.report.cells import MISSING, name, num, search_of, strategy
from results.report.figures import PLOT_DETAIL_LIMIT, new_figure, place_labels, save, styles, tab10
from results.report.pareto import strategy_fronts

# (column, legend label) for the size-figure bars, the paper's Table 4 view.
SIZE_SERIES = (
    ("flash_bytes", "Vela Flash"),
    ("rhs_bound_bytes", "RHS bound N(s·b + H2(s))"),
    ("empirical_entropy_bytes", "Empirical entropy of int8 weights"),
    ("coded_mask_bytes", "Range-coded masks + b-bit values"),
    ("encoded_weight_bytes", "Vela encoded weights"),
)


def accuracy_plot(rows: list[dict], front: list[int], path: Path, target: str) -> None:
    """int8 (filled) and float (hollow) accuracy against Flash, the overall and each strategy's front."""
    figure = new_figure(8.0, 5.5)
    ax = figure.add_subplot()
    style = styles(strategy(r) for r in rows)
    on_front = {id(rows[i]) for i in front}
    labels: list[tuple[float, float, str]] = []
    for each, (marker, colour) in style.items():
        members = [r for r in rows if strategy(r) == each]
        with_int8 = [r for r in members if num(r.get("accuracy_int8")) is not None]
        with_float = [r for r in members if num(r.get("accuracy_float")) is not None]
        if with_int8:
            ax.scatter([r["flash_bytes"] / 1024 for r in with_int8], [100 * r["accuracy_int8"] for r in with_int8],
                       marker=marker, color=colour, s=42, zorder=3)
        if with_float:
            ax.scatter([r["flash_bytes"] / 1024 for r in with_float], [100 * r["accuracy_float"] for r in with_float],
                       marker=marker, facecolors="none", edgecolors=colour, s=42, linewidths=1.2, zorder=3)
        detailed = members if len(rows) <= PLOT_DETAIL_LIMIT else [r for r in members if id(r) in on_front]
        for r in detailed:
            acc_int8, acc_float = num(r.get("accuracy_int8")), num(r.get("accuracy_float"))
            x = r["flash_bytes"] / 1024
            if acc_int8 is not None and acc_float is not None:
                # Quantisation loss: float (hollow) to int8 (filled).
                ax.plot([x, x], [100 * acc_float, 100 * acc_int8], color=colour, linewidth=0.8, linestyle=":",
                        zorder=2)
            y = acc_int8 if acc_int8 is not None else acc_float
            labels.append((x, 100 * y, name(r)))
    if front:
        pts = sorted((rows[i]["flash_bytes"] / 1024, 100 * rows[i]["accuracy_int8"]) for i in front)
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="0.25", linewidth=1.2,
                zorder=1)
    for each, members in strategy_fronts(rows).items():
        pts = [(r["flash_bytes"] / 1024, 100 * r["accuracy_int8"]) for r in members]
        if len(pts) > 1:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=style[each][1], linewidth=0.9,
                    linestyle="--", alpha=0.8, zorder=1)
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", markersize=7, label=s)
               for s, (m, c) in style.items()]
    handles.append(Line2D([], [], marker="o", color="0.3", markerfacecolor="none", linestyle="none",
                          markersize=7, label="float accuracy (hollow)"))
    if front:
        handles.append(Line2D([], [], color="0.25", linewidth=1.2, label="Pareto front (int8)"))
        handles.append(Line2D([], [], color="0.45", linewidth=0.9, linestyle="--", label="each strategy's front"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    place_labels(ax, labels, fontsize=7)
    ax.set_xlabel("Flash (KiB, Vela's compiled model)" if target == "vela" else "Flash (KiB, linked image)")
    ax.set_ylabel("Top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs Flash on {target}")
    ax.grid(True, alpha=0.35)
    save(figure, path)


def unique_labels(rows: list[dict]) -> list[str]:
    """Candidate names, with target and row id added where the same name occurs more than once."""
    labels = [name(r) for r in rows]
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        counts[label] += 1
    # The same candidate measured on several targets or runs: tell the bars apart.
    return [f"{label} [{r.get('target') or MISSING} #{r.get('id') or i}]" if counts[label] > 1 else label
            for i, (label, r) in enumerate(zip(labels, rows))]


def size_plot(rows: list[dict], path: Path) -> None:
    """Per candidate, one bar per size figure of ``SIZE_SERIES``."""
    colours = tab10()
    labels = unique_labels(rows)
    n_series = len(SIZE_SERIES)
    bar = 0.8 / n_series
    height = min(400.0, max(3.5, 0.22 * n_series * len(rows) + 1.5))
    figure = new_figure(9.0, height)
    ax = figure.add_subplot()
    for k, (column, label) in enumerate(SIZE_SERIES):
        ys, widths = [], []
        for i, r in enumerate(rows):
            value = num(r.get(column))
            if value is not None:
                ys.append(i - 0.4 + bar * (k + 0.5))
                widths.append(value / 1024)
        ax.barh(ys, widths, height=bar, color=colours[k], label=label)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()  # first candidate on top, like the table
    ax.set_xlabel("KiB")
    ax.set_title("Flash vs size model")
    ax.grid(True, axis="x", alpha=0.35)
    ax.legend(fontsize=8, loc="best")
    save(figure, path)


def weight_norm_plot(rows: list[dict], path: Path) -> None:
    """||theta||^2 over finetuning with Q-hat (solid) and plain Q (dashed), one colour per candidate."""
    colours = tab10()
    figure = new_figure(7.0, 4.0)
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        norms = search_of(row).weight_norm
        for key, line, label in (("trajectory_qhat", "-", "Q-hat"), ("trajectory_plain", "--", "Q")):
            if norms.get(key):
                steps, values = zip(*norms[key])
                axes.plot(steps, values, line, color=colours[index % len(colours)], label=f"{name(row)} ({label})")
    axes.set_xlabel("finetuning step")
    axes.set_ylabel("||theta||^2 of the kept layers")
    axes.set_title("Weight norm during finetuning, with and without Q-hat (paper's Fig. 3)")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    save(figure, path)


def decisions_plot(rows: list[dict], path: Path) -> None:
    """Bits, nonzero fraction and width per layer of each searched candidate (the paper's Figs. 9-11);
    a skipped layer (identity) is drawn at 0."""
    figure = new_figure(9.0, 7.0)
    style = styles(name(r) for r in rows)
    layers = list(search_of(rows[0]).decisions)
    for panel, (axis, label) in enumerate((("bits", "weight bits"), ("nonzero", "nonzero fraction s"),
                                           ("width", "width fraction rho")), start=1):
        axes = figure.add_subplot(3, 1, panel)
        for row in rows:
            decisions = search_of(row).decisions
            values = [0.0 if decisions.get(layer, {}).get("op") == "identity" else decisions.get(layer, {}).get(axis)
                      for layer in layers]
            marker, colour = style[name(row)]
            axes.plot(range(len(layers)), [math.nan if v is None else v for v in values], marker=marker, color=colour,
                      label=name(row), linewidth=1)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.set_xticks(range(len(layers)))
        axes.set_xticklabels(layers if panel == 3 else [], rotation=60, fontsize=7)
    figure.axes[0].legend(fontsize=7, ncol=3)
    figure.axes[0].set_title("Per-layer decisions of the searched candidates (identity = 0)")
    save(figure, path)
