"""Markdown (and self-contained HTML) report with matplotlib PNGs from measurement dicts (the store's
column names); pandas aggregates the tables that compare targets and runs.

Accuracies are stored as fractions in [0, 1] and shown in percent. Plots are drawn on ``Figure`` objects
with the Agg canvas, never through pyplot, so importing this module leaves an interactive session's
backend alone and works without a display.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

ACCURACY_PLOT = "accuracy_vs_flash.png"
SIZE_PLOT = "size_figures.png"
NORM_PLOT = "weight_norm.png"
DECISIONS_PLOT = "decisions.png"
ESTIMATE_PLOT = "estimate_vs_measured.png"
HISTORY_PLOT = "history.png"
MISSING = "—"
DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# Beyond this many candidates a plot names only the Pareto front and the size bars show a sample:
# a thousand labels or bars are unreadable, and slow to draw.
PLOT_DETAIL_LIMIT = 40
DECISIONS_LIMIT = 6  # searched candidates in the per-layer table and plot (the most accurate ones)
HISTORY_SERIES_LIMIT = 8  # (candidate, target) lines in the history plot: those measured most often
# (column, axis label, scale) of the metrics followed over runs.
HISTORY_METRICS = (("accuracy_int8", "int8 accuracy (%)", 100.0), ("flash_bytes", "Flash (KiB)", 1 / 1024),
                   ("latency_s", "latency (ms)", 1000.0), ("npu_cycles", "NPU cycles", 1.0))
# (column, legend label) for the size-figure bars, the paper's Table 4 view.
SIZE_SERIES = (
    ("flash_bytes", "Vela Flash"),
    ("rhs_bound_bytes", "RHS bound N(s·b + H2(s))"),
    ("empirical_entropy_bytes", "Empirical entropy of int8 weights"),
    ("coded_mask_bytes", "Range-coded masks + b-bit values"),
    ("encoded_weight_bytes", "Vela encoded weights"),
)


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


# -- formatting ---------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _kib(value: Any) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value / 1024:.2f}"


def _pct(value: Any) -> str:
    value = _num(value)
    return MISSING if value is None else f"{100 * value:.2f}"


def _int(value: Any) -> str:
    value = _num(value)
    return MISSING if value is None else f"{int(round(value)):,}"


def _latency_ms(row: dict) -> str:
    value = _num(row.get("latency_s"))
    if value is None:
        return MISSING
    return f"{1000 * value:.3f}" + (" (est.)" if row.get("latency_is_estimate") else "")


def _text(value: Any, limit: int = 0) -> str:
    if value is None or value == "":
        return MISSING
    text = " ".join(str(value).split())
    if limit and len(text) > limit:
        text = text[:limit - 1] + "…"
    return text


def _short_hash(row: dict) -> str:
    return (row.get("candidate_hash") or "")[:12] or MISSING


def _name(row: dict) -> str:
    return row.get("candidate_name") or _short_hash(row)


def _strategy(row: dict) -> str:
    return row.get("strategy") or "unknown"


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def markdown_table(headers: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    """A GitHub markdown table, padded so the source reads as a table too; ``right`` aligns columns right."""
    right = set(right)

    def cell(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    body = [[cell(v) for v in row] for row in rows]
    head = [cell(h) for h in headers]
    widths = [max([3, len(head[c])] + [len(r[c]) for r in body]) for c in range(len(head))]

    def line(values: list[str]) -> str:
        padded = [v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(values, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if c in right else "-" * w for c, w in enumerate(widths)]
    return "\n".join([line(head), "| " + " | ".join(rule) + " |"] + [line(r) for r in body])


# -- plots --------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    # No Software/date metadata, so the same rows give the same file on the same matplotlib.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})


def _styles(strategies: Iterable[str]) -> dict[str, tuple[str, Any]]:
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return {s: (MARKERS[i % len(MARKERS)], colours[i % len(colours)]) for i, s in enumerate(sorted(set(strategies)))}


def _accuracy_plot(rows: list[dict], front: list[int], path: Path, target: str) -> None:
    figure = _new_figure(8.0, 5.5)
    ax = figure.add_subplot()
    styles = _styles(_strategy(r) for r in rows)
    on_front = {id(rows[i]) for i in front}
    labels: list[tuple[float, float, str]] = []
    for strategy, (marker, colour) in styles.items():
        members = [r for r in rows if _strategy(r) == strategy]
        with_int8 = [r for r in members if _num(r.get("accuracy_int8")) is not None]
        with_float = [r for r in members if _num(r.get("accuracy_float")) is not None]
        if with_int8:
            ax.scatter([r["flash_bytes"] / 1024 for r in with_int8], [100 * r["accuracy_int8"] for r in with_int8],
                       marker=marker, color=colour, s=42, zorder=3)
        if with_float:
            ax.scatter([r["flash_bytes"] / 1024 for r in with_float], [100 * r["accuracy_float"] for r in with_float],
                       marker=marker, facecolors="none", edgecolors=colour, s=42, linewidths=1.2, zorder=3)
        detailed = members if len(rows) <= PLOT_DETAIL_LIMIT else [r for r in members if id(r) in on_front]
        for r in detailed:
            acc_int8, acc_float = _num(r.get("accuracy_int8")), _num(r.get("accuracy_float"))
            x = r["flash_bytes"] / 1024
            if acc_int8 is not None and acc_float is not None:
                # Quantisation loss: float (hollow) to int8 (filled).
                ax.plot([x, x], [100 * acc_float, 100 * acc_int8], color=colour, linewidth=0.8, linestyle=":",
                        zorder=2)
            y = acc_int8 if acc_int8 is not None else acc_float
            labels.append((x, 100 * y, _name(r)))
    if front:
        pts = sorted((rows[i]["flash_bytes"] / 1024, 100 * rows[i]["accuracy_int8"]) for i in front)
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="0.25", linewidth=1.2,
                zorder=1)
    for strategy, members in _strategy_fronts(rows).items():
        pts = [(r["flash_bytes"] / 1024, 100 * r["accuracy_int8"]) for r in members]
        if len(pts) > 1:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=styles[strategy][1], linewidth=0.9,
                    linestyle="--", alpha=0.8, zorder=1)
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", markersize=7, label=s)
               for s, (m, c) in styles.items()]
    handles.append(Line2D([], [], marker="o", color="0.3", markerfacecolor="none", linestyle="none",
                          markersize=7, label="float accuracy (hollow)"))
    if front:
        handles.append(Line2D([], [], color="0.25", linewidth=1.2, label="Pareto front (int8)"))
        handles.append(Line2D([], [], color="0.45", linewidth=0.9, linestyle="--", label="each strategy's front"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    _place_labels(ax, labels, fontsize=7)
    ax.set_xlabel("Flash (KiB, Vela's compiled model)" if target == "vela" else "Flash (KiB, linked image)")
    ax.set_ylabel("Top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs Flash on {target}")
    ax.grid(True, alpha=0.35)
    _save(figure, path)


# Where a label may sit around its point (points right/up of it); tried in order, nearest first.
LABEL_OFFSETS = [(4, 3), (4, -9), (-4, 3), (-4, -9), (4, 12), (4, -18), (-4, 12), (-4, -18), (4, 21), (4, -27),
                 (-4, 21), (-4, -27), (4, 30), (4, -36)]


def _place_labels(ax, labels: list[tuple[float, float, str]], fontsize: float) -> None:
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


def _strategy_fronts(rows: list[dict]) -> dict[str, list[dict]]:
    """Each strategy's own Pareto front (int8 accuracy vs Flash), sorted by Flash."""
    fronts = {}
    for strategy in sorted({_strategy(r) for r in rows}):
        members = [r for r in rows if _strategy(r) == strategy and _num(r.get("flash_bytes")) is not None
                   and _num(r.get("accuracy_int8")) is not None]
        front = [members[i] for i in pareto_front([(float(r["flash_bytes"]), float(r["accuracy_int8"]))
                                                   for r in members])]
        if front:
            fronts[strategy] = sorted(front, key=lambda r: (r["flash_bytes"], -r["accuracy_int8"]))
    return fronts


def _unique_labels(rows: list[dict]) -> list[str]:
    labels = [_name(r) for r in rows]
    counts = defaultdict(int)
    for label in labels:
        counts[label] += 1
    # The same candidate measured on several targets or runs: tell the bars apart.
    return [f"{label} [{r.get('target') or MISSING} #{r.get('id') or i}]" if counts[label] > 1 else label
            for i, (label, r) in enumerate(zip(labels, rows))]


def _size_plot(rows: list[dict], path: Path) -> None:
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    labels = _unique_labels(rows)
    n_series = len(SIZE_SERIES)
    bar = 0.8 / n_series
    height = min(400.0, max(3.5, 0.22 * n_series * len(rows) + 1.5))
    figure = _new_figure(9.0, height)
    ax = figure.add_subplot()
    for k, (column, label) in enumerate(SIZE_SERIES):
        ys, widths = [], []
        for i, r in enumerate(rows):
            value = _num(r.get(column))
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
    _save(figure, path)


# -- report -------------------------------------------------------------------------------------------------

MEASUREMENT_HEADERS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("candidate", _name, False),
    ("strategy", _strategy, False),
    ("hash", _short_hash, False),
    ("target", lambda r: _text(r.get("target")), False),
    ("flash KiB", lambda r: _kib(r.get("flash_bytes")), True),
    ("sram KiB", lambda r: _kib(r.get("sram_bytes")), True),
    ("rhs bound KiB", lambda r: _kib(r.get("rhs_bound_bytes")), True),
    ("empirical entropy KiB", lambda r: _kib(r.get("empirical_entropy_bytes")), True),
    ("coded mask KiB", lambda r: _kib(r.get("coded_mask_bytes")), True),
    ("npu cycles", lambda r: _int(r.get("npu_cycles")), True),
    ("latency ms", _latency_ms, True),
    ("accuracy int8 %", lambda r: _pct(r.get("accuracy_int8")), True),
    ("accuracy float %", lambda r: _pct(r.get("accuracy_float")), True),
    ("samples", lambda r: _int(r.get("accuracy_samples")), True),
    ("tflm arena KiB", lambda r: _kib(r.get("tflm_arena_bytes")), True),
]


def _table(rows: list[dict], columns: list[tuple[str, Callable[[dict], str], bool]]) -> str:
    return markdown_table([c[0] for c in columns], [[c[1](r) for c in columns] for r in rows],
                          right=[i for i, c in enumerate(columns) if c[2]])


def _provenance(rows: list[dict]) -> list[str]:
    lines = ["## Provenance", ""]
    shas = sorted({str(r["git_sha"]) for r in rows if r.get("git_sha")})
    hosts = sorted({str(r["host"]) for r in rows if r.get("host")})
    lines.append(f"- git SHA: {', '.join(f'`{s}`' for s in shas) or MISSING}")
    lines.append(f"- host: {', '.join(f'`{h}`' for h in hosts) or MISSING}")
    stamps = sorted((r["created_at"] for r in rows if r.get("created_at") is not None), key=str)
    if stamps:
        lines.append(f"- measured: {stamps[0]} to {stamps[-1]}")
    versions: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        for key, value in (r.get("tool_versions") or {}).items():
            versions[str(key)].add(str(value))
    lines.append("")
    if versions:
        lines += ["Tool versions:", "",
                  markdown_table(["tool", "versions"], [[k, ", ".join(sorted(v))] for k, v in sorted(versions.items())]),
                  ""]
    else:
        lines += ["Tool versions: " + MISSING, ""]
    settings: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("target_settings") is not None:
            settings[_json_text(r["target_settings"])].add(r.get("target") or MISSING)
    if settings:
        lines += ["Target settings:", "",
                  markdown_table(["targets", "settings"],
                                 [[", ".join(sorted(t)), f"`{s}`"] for s, t in sorted(settings.items())]),
                  ""]
    else:
        lines += ["Target settings: " + MISSING, ""]
    return lines


def _front_text(front: list[dict], limit: int = 8) -> str:
    text = ", ".join(f"{_name(r)} ({_kib(r['flash_bytes'])}: {_pct(r['accuracy_int8'])})" for r in front[:limit])
    return text + (f", … {len(front) - limit} more" if len(front) > limit else "")


def _search_of(row: dict) -> dict:
    return (row.get("extra") or {}).get("search") or {}


def _weight_norms(search: dict) -> str:
    norms = search.get("weight_norm") or {}
    parts = [f"{label} {norms[key]:.3g}" for key, label in (("before", "start"), ("after_qhat", "Q-hat"),
                                                             ("after_plain", "Q")) if _num(norms.get(key)) is not None]
    return ", ".join(parts) or MISSING


SEARCH_COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("candidate", _name, False),
    ("strategy", _strategy, False),
    ("budget KB", lambda r: f"{_search_of(r)['budget_bytes'] / 1000:g}", True),
    ("size bound KB", lambda r: f"{_search_of(r)['size_bits'] / 8000:.2f}", True),
    ("gamma(pi) meets", lambda r: {True: "yes", False: "NO", None: MISSING}[_search_of(r).get("constraint_met_argmax")], False),
    ("emitted meets", lambda r: "yes" if _search_of(r).get("constraint_met") else "NO", False),
    ("repair moves", lambda r: str(len(_search_of(r).get("repair_moves") or [])), True),
    ("flash KiB", lambda r: _kib(r.get("flash_bytes")), True),
    ("int8 acc %", lambda r: _pct(r.get("accuracy_int8")), True),
    ("search s", lambda r: _text((_search_of(r).get("timings_s") or {}).get("search_s")), True),
    ("finetune s", lambda r: _text((_search_of(r).get("timings_s") or {}).get("finetune_s")), True),
    ("||theta||^2 (Fig. 3)", lambda r: _weight_norms(_search_of(r)), False),
]


def _weight_norm_plot(rows: list[dict], path: Path) -> None:
    """||theta||^2 over finetuning with Q-hat (solid) and plain Q (dashed), one colour per candidate."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    figure = _new_figure(7.0, 4.0)
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        norms = _search_of(row)["weight_norm"]
        for key, style, label in (("trajectory_qhat", "-", "Q-hat"), ("trajectory_plain", "--", "Q")):
            if norms.get(key):
                steps, values = zip(*norms[key])
                axes.plot(steps, values, style, color=colours[index % len(colours)], label=f"{_name(row)} ({label})")
    axes.set_xlabel("finetuning step")
    axes.set_ylabel("||theta||^2 of the kept layers")
    axes.set_title("Weight norm during finetuning, with and without Q-hat (paper's Fig. 3)")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    _save(figure, path)


def _decisions_plot(rows: list[dict], path: Path) -> None:
    """Bits, nonzero fraction and width per layer of each searched candidate (the paper's Figs. 9-11);
    a skipped layer (identity) is drawn at 0."""
    figure = _new_figure(9.0, 7.0)
    styles = _styles(_name(r) for r in rows)
    layers = list(_search_of(rows[0])["decisions"])
    for panel, (axis, label) in enumerate((("bits", "weight bits"), ("nonzero", "nonzero fraction s"),
                                           ("width", "width fraction rho")), start=1):
        axes = figure.add_subplot(3, 1, panel)
        for row in rows:
            decisions = _search_of(row)["decisions"]
            values = [0.0 if decisions.get(layer, {}).get("op") == "identity" else decisions.get(layer, {}).get(axis)
                      for layer in layers]
            marker, colour = styles[_name(row)]
            axes.plot(range(len(layers)), [math.nan if v is None else v for v in values], marker=marker, color=colour,
                      label=_name(row), linewidth=1)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.set_xticks(range(len(layers)))
        axes.set_xticklabels(layers if panel == 3 else [], rotation=60, fontsize=7)
    figure.axes[0].legend(fontsize=7, ncol=3)
    figure.axes[0].set_title("Per-layer decisions of the searched candidates (identity = 0)")
    _save(figure, path)


def _decisions_table(rows: list[dict]) -> str:
    """Layers down, candidates across (a pandas frame keeps the layers of every candidate in order)."""
    import pandas as pd

    def cell(decision: dict) -> str:
        if decision.get("op") == "identity":
            return "skip"
        return " ".join(f"{letter}{decision[key]:g}" for key, letter in (("bits", "b"), ("nonzero", "s"), ("width", "w"))
                        if _num(decision.get(key)) is not None) or MISSING

    frame = pd.DataFrame({_name(r): {layer: cell(d) for layer, d in _search_of(r)["decisions"].items()} for r in rows})
    frame = frame.fillna(MISSING)
    return markdown_table(["layer", *frame.columns], [[layer, *values] for layer, values in zip(frame.index,
                                                                                            frame.values.tolist())])


def _search_section(rows: list[dict], out_dir: Path) -> list[str]:
    """Searched candidates with their budget verdicts, and per budget each strategy's best beside the
    uniform candidate whose size bound is nearest the budget."""
    searched = [r for r in rows if _search_of(r).get("budget_bytes") is not None]
    if not searched:
        return []
    lines = ["## Searches under a size budget", "",
             "gamma(pi) meets: the argmax configuration after search; emitted meets: the candidate as finetuned "
             "(after any repair). ||theta||^2: weight norm at the start of finetuning and after it with Q-hat / "
             "plain Q (the paper's Fig. 3).", "", _table(searched, SEARCH_COLUMNS), ""]
    uniform = [r for r in rows if _strategy(r) == "uniform" and _num(r.get("rhs_bound_bytes")) is not None]
    header = ["budget KB", "strategy", "candidate", "flash KiB", "size bound KB", "int8 acc %"]
    table = []
    for budget in sorted({_search_of(r)["budget_bytes"] for r in searched}):
        at_budget = [r for r in searched if _search_of(r)["budget_bytes"] == budget and not _search_of(r).get("ablation")]
        best: dict[str, dict] = {}
        for row in at_budget:
            current = best.get(_strategy(row))
            if current is None or (_num(row.get("accuracy_int8")) or 0) > (_num(current.get("accuracy_int8")) or 0):
                best[_strategy(row)] = row
        if uniform:
            best["uniform (nearest size)"] = min(uniform, key=lambda r: abs(r["rhs_bound_bytes"] - budget))
        for strategy, row in sorted(best.items()):
            table.append([f"{budget / 1000:g}", strategy, _name(row), _kib(row.get("flash_bytes")),
                          f"{(_num(row.get('rhs_bound_bytes')) or 0) / 1000:.2f}", _pct(row.get("accuracy_int8"))])
    lines += ["### Strategies at each budget", "", markdown_table(header, table, right=(0, 3, 4, 5)), ""]
    with_decisions = sorted((r for r in searched if _search_of(r).get("decisions")),
                            key=lambda r: -(_num(r.get("accuracy_int8")) or 0.0))
    if with_decisions:
        shown = with_decisions[:DECISIONS_LIMIT]
        _decisions_plot(shown, out_dir / DECISIONS_PLOT)
        lines += ["### Per-layer decisions", "", f"![Per-layer decisions]({DECISIONS_PLOT})", "",
                  *([f"The {len(shown)} most accurate of {len(with_decisions)} searched candidates.", ""]
                    if len(with_decisions) > len(shown) else []),
                  _decisions_table(shown), "",
                  "b: weight bits, s: nonzero fraction, w: width fraction; 'skip': the block's identity option.", ""]
    else:
        (out_dir / DECISIONS_PLOT).unlink(missing_ok=True)
    compared = [r for r in searched if (_search_of(r).get("weight_norm") or {}).get("trajectory_plain")]
    if compared:
        _weight_norm_plot(compared, out_dir / NORM_PLOT)
        lines += ["### Number format (Fig. 3)", "", f"![Weight norm]({NORM_PLOT})", "",
                  "Each searched configuration finetuned twice from the same weights: with Q-hat, whose grid starts "
                  "at the pruning boundary beta, and with plain Q. The paper's Fig. 3 shows plain Q's norm growing "
                  "as weights climb over the pruning boundary.", ""]
    else:
        (out_dir / NORM_PLOT).unlink(missing_ok=True)
    ablation = [r for r in searched if _search_of(r).get("ablation")]
    if ablation:
        components = ("rejection", "mc_samples", "projection", "lambda_tuning")

        def mark(row: dict, component: str) -> str:
            return "✓" if _search_of(row)["ablation"].get(component) else ""

        columns = [("row", lambda r: _search_of(r)["ablation"]["row"], False),
                   *((c.replace("_", " "), lambda r, c=c: mark(r, c), False) for c in components),
                   *(c for c in SEARCH_COLUMNS if c[0] in ("budget KB", "gamma(pi) meets", "emitted meets",
                                                           "int8 acc %", "search s"))]
        lines += ["### Ablation (the UDC paper's Table 3)", "",
                  "\"lambda tuning\": the row searched once per lambda and kept the best that met the budget.", "",
                  _table(ablation, columns), ""]
    return lines


def _estimate_section(rows: list[dict], out_dir: Path) -> list[str]:
    """Vela's estimates beside what a device measured for the same candidate: NPU cycles (Vela's estimate vs
    the Ethos-U PMU on corstone300/board) and Flash (Vela's read-only memory vs the linked ELF)."""
    import pandas as pd

    path = out_dir / ESTIMATE_PLOT
    frame = pd.DataFrame([{"hash": r["candidate_hash"], "candidate": _name(r), "target": r.get("target") or MISSING,
                           "accelerator": (r.get("target_settings") or {}).get("accelerator"),
                           "npu_cycles": _num(r.get("npu_cycles")), "flash_bytes": _num(r.get("flash_bytes")),
                           "own_estimate": _num((r.get("extra") or {}).get("vela_npu_cycles"))}
                          for r in rows if r.get("candidate_hash")],
                         columns=["hash", "candidate", "target", "accelerator", "npu_cycles", "flash_bytes",
                                  "own_estimate"])
    estimated = frame[frame.target == "vela"].groupby(["hash", "accelerator"], dropna=False).agg(
        estimate_cycles=("npu_cycles", "median"), vela_flash=("flash_bytes", "median")).reset_index()
    measured = frame[frame.target != "vela"].groupby(["hash", "candidate", "target", "accelerator"], dropna=False).agg(
        measured_cycles=("npu_cycles", "median"), elf_flash=("flash_bytes", "median"),
        own_estimate=("own_estimate", "median")).reset_index()
    # Same candidate and accelerator where the device has one; any Vela row of the candidate otherwise (qemu-an547).
    exact = measured.merge(estimated, on=["hash", "accelerator"], how="left")
    loose = measured.merge(estimated.drop(columns="accelerator").groupby("hash").first(), on="hash", how="left")
    joined = exact.fillna({"estimate_cycles": loose.estimate_cycles, "vela_flash": loose.vela_flash})
    # corstone300 and board rows carry Vela's estimate for the model they ran.
    joined["estimate_cycles"] = joined.own_estimate.where(joined.own_estimate.notna(), joined.estimate_cycles)
    cycles = joined.dropna(subset=["estimate_cycles", "measured_cycles"])
    flash = joined.dropna(subset=["vela_flash", "elf_flash"])
    if cycles.empty and flash.empty:
        path.unlink(missing_ok=True)
        return []
    _estimate_plot(cycles, flash, path)
    table = []
    for item in joined.loc[cycles.index.union(flash.index)].sort_values(["candidate", "target"]).itertuples():
        table.append([item.candidate, item.target, _int(item.estimate_cycles), _int(item.measured_cycles),
                      _ratio(item.measured_cycles, item.estimate_cycles), _kib(item.vela_flash), _kib(item.elf_flash),
                      _ratio(item.elf_flash, item.vela_flash)])
    return ["## Estimate vs measurement", "", f"![Estimate vs measurement]({ESTIMATE_PLOT})", "",
            markdown_table(["candidate", "target", "Vela NPU cycles", "measured NPU cycles", "measured / Vela",
                            "Vela Flash KiB", "ELF Flash KiB", "ELF / Vela"], table, right=range(2, 8)), "",
            "Measured NPU cycles: the Ethos-U PMU's active cycles per inference. ELF Flash is the whole image "
            "(code, TFLM, model and its data), Vela Flash the compiled model's read-only memory alone.", ""]


def _ratio(numerator: Any, denominator: Any) -> str:
    numerator, denominator = _num(numerator), _num(denominator)
    return MISSING if numerator is None or not denominator else f"{numerator / denominator:.2f}x"


def _estimate_plot(cycles, flash, path: Path) -> None:
    figure = _new_figure(10.0, 4.5)
    for panel, (frame, x, y, scale, label) in enumerate(((cycles, "estimate_cycles", "measured_cycles", 1.0,
                                                          "NPU cycles"),
                                                         (flash, "vela_flash", "elf_flash", 1 / 1024, "Flash KiB")), 1):
        axes = figure.add_subplot(1, 2, panel)
        styles = _styles(frame.target)
        for target, group in frame.groupby("target"):
            axes.scatter(group[x] * scale, group[y] * scale, marker=styles[target][0], color=styles[target][1],
                         label=target, zorder=3)
            if len(frame) <= PLOT_DETAIL_LIMIT:
                for item in group.itertuples():
                    axes.annotate(item.candidate, (getattr(item, x) * scale, getattr(item, y) * scale), fontsize=7,
                                  xytext=(3, 3), textcoords="offset points")
        if not frame.empty:
            low, high = min(frame[x].min(), frame[y].min()) * scale, max(frame[x].max(), frame[y].max()) * scale
            axes.plot([low, high], [low, high], "--", color="0.5", linewidth=0.8, label="measured = Vela")
            axes.legend(fontsize=7)
        axes.ticklabel_format(style="sci", scilimits=(-3, 4))  # cycle counts would overlap in full
        axes.set_xlabel(f"Vela estimate ({label})")
        axes.set_ylabel(f"measured ({label})")
        axes.set_title(f"{label}: Vela vs device")
        axes.grid(alpha=0.3)
    _save(figure, path)


def _history_section(rows: list[dict], out_dir: Path) -> list[str]:
    """Each metric of a (candidate, target) over the times it was measured, where it was measured more than once."""
    import pandas as pd

    path = out_dir / HISTORY_PLOT
    metrics = [m for m, _, _ in HISTORY_METRICS]
    frame = pd.DataFrame([{"candidate": _name(r), "target": r.get("target") or MISSING, "when": r.get("created_at"),
                           "hash": r.get("candidate_hash"), **{m: _num(r.get(m)) for m in metrics}}
                          for r in rows if r.get("status") == "ok" and r.get("created_at") is not None],
                         columns=["candidate", "target", "when", "hash", *metrics])
    frame["when"] = pd.to_datetime(frame["when"], utc=True, format="mixed")
    counts = frame.groupby(["candidate", "target"])["when"].nunique()
    repeated = counts[counts > 1].sort_index().sort_values(ascending=False, kind="stable")
    if repeated.empty:
        path.unlink(missing_ok=True)
        return []
    shown = list(repeated.index[:HISTORY_SERIES_LIMIT])
    series = {key: group.sort_values("when") for key, group in frame.groupby(["candidate", "target"]) if key in shown}
    plotted = [(m, label, scale) for m, label, scale in HISTORY_METRICS
               if any(group[m].notna().any() for group in series.values())]
    figure = _new_figure(9.0, 2.4 * len(plotted) + 0.6)
    styles = _styles(f"{c} on {t}" for c, t in shown)
    for panel, (metric, label, scale) in enumerate(plotted, 1):
        axes = figure.add_subplot(len(plotted), 1, panel)
        for (candidate, target), group in series.items():
            marker, colour = styles[f"{candidate} on {target}"]
            values = group.dropna(subset=[metric])
            when = values["when"].dt.tz_localize(None)
            axes.plot(when, values[metric] * scale, marker=marker, color=colour, linewidth=1,
                      label=f"{candidate} on {target}")
            # A new model under the same name (a search or training change): ringed, so a step in a metric
            # can be told from the same model measured differently.
            new_model = (values["hash"] != values["hash"].shift()) & values["hash"].shift().notna()
            axes.scatter(when[new_model], values[metric][new_model] * scale, s=160, facecolors="none",
                         edgecolors=colour, linewidths=1.2, zorder=4)
        axes.set_ylabel(label, fontsize=8)
        axes.grid(alpha=0.3)
    figure.axes[0].set_title("History over runs (UTC); ringed: a new model under the same name")
    figure.axes[0].legend(fontsize=7, ncol=2)
    figure.autofmt_xdate()
    _save(figure, path)
    table = []
    for (candidate, target), group in sorted(series.items()):
        first, last = group.iloc[0], group.iloc[-1]
        table.append([candidate, target, str(int(counts[(candidate, target)])), str(group["hash"].nunique()),
                      f"{first.when:%Y-%m-%d %H:%M}", f"{last.when:%Y-%m-%d %H:%M}"]
                     + [f"{_scaled(first[m], scale)} → {_scaled(last[m], scale)}" for m, _, scale in HISTORY_METRICS])
    lines = ["## History", "", f"![History]({HISTORY_PLOT})", ""]
    if len(repeated) > len(shown):
        lines += [f"The {len(shown)} of {len(repeated)} candidates measured most often.", ""]
    return lines + [markdown_table(["candidate", "target", "measurements", "models", "first", "last",
                                    *(label for _, label, _ in HISTORY_METRICS)], table), ""]


def _scaled(value: Any, scale: float) -> str:
    value = _num(value)
    if value is None:
        return MISSING
    return f"{value * scale:,.0f}" if abs(value * scale) >= 1000 else f"{value * scale:.4g}"


def _accuracy_plot_name(target: str, first: bool) -> str:
    return ACCURACY_PLOT if first else f"accuracy_vs_flash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', target)}.png"


def _accuracy_section(ok: list[dict], out_dir: Path) -> list[str]:
    """Accuracy vs Flash with its Pareto fronts, one plot per target: flash_bytes is Vela's compiled model on
    ``vela`` but the whole linked image on a firmware target, so the two never share an axis or a front."""
    lines = ["## Accuracy vs Flash", ""]
    plotted = [r for r in ok if _num(r.get("flash_bytes")) is not None
               and (_num(r.get("accuracy_int8")) is not None or _num(r.get("accuracy_float")) is not None)]
    by_target: dict[str, list[dict]] = defaultdict(list)
    for r in plotted:
        by_target[r.get("target") or MISSING].append(r)
    # vela first: its plot keeps the plain file name that earlier reports and links use.
    targets = sorted(by_target, key=lambda t: (t != "vela", t))
    for stale in out_dir.glob("accuracy_vs_flash*.png"):  # a plot from an earlier report would contradict this one
        stale.unlink()
    if not targets:
        return lines + ["No ok measurement has both an accuracy and a Flash size; accuracy plot skipped.", ""]
    for position, target in enumerate(targets):
        rows = by_target[target]
        candidates = [i for i, r in enumerate(rows) if _num(r.get("accuracy_int8")) is not None]
        front = [candidates[j] for j in pareto_front(
            [(float(rows[i]["flash_bytes"]), float(rows[i]["accuracy_int8"])) for i in candidates])]
        name = _accuracy_plot_name(target, position == 0)
        _accuracy_plot(rows, front, out_dir / name, target)
        lines += [f"![Accuracy vs Flash on {target}]({name})", "",
                  "Filled markers: int8 accuracy on the target; hollow: float accuracy before export.", ""]
        front_rows = sorted((rows[i] for i in front), key=lambda r: (r["flash_bytes"], -r["accuracy_int8"]))
        lines += [f"### Pareto front on {target} (max int8 accuracy, min Flash)", ""]
        if front_rows:
            lines += [_table(front_rows, [MEASUREMENT_HEADERS[i] for i in (0, 1, 2, 3, 4, 11)]), ""]
        else:
            lines += ["No ok measurement has both int8 accuracy and Flash.", ""]
        fronts = _strategy_fronts(rows)
        if len(fronts) > 1:
            lines += [f"### Pareto front per strategy on {target}", "",
                      markdown_table(["strategy", "on its front", "front (Flash KiB: int8 acc %)"],
                                     [[strategy, str(len(members)), _front_text(members)]
                                      for strategy, members in fronts.items()], right=[1]), ""]
    return lines


def write_report(rows: list[dict], out_dir: Path, title: str = "UDC harness report",
                 history: list[dict] | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir``; return the markdown's path. ``history``: measurements
    from other runs of the same candidates, for the history section (default: ``rows`` themselves)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = [f"# {title}", ""]
    targets = sorted({r.get("target") or MISSING for r in rows})
    strategies = sorted({_strategy(r) for r in rows})
    lines += [f"{len(rows)} measurements: {len(ok)} ok, {len(failed)} failed. "
              f"Targets: {', '.join(targets) or MISSING}. Strategies: {', '.join(strategies) or MISSING}.", ""]

    lines += _accuracy_section(ok, out_dir)
    lines += _search_section(ok, out_dir)
    lines += _estimate_section(ok, out_dir)
    lines += _history_section(rows if history is None else history, out_dir)

    lines += ["## Size figures", ""]
    size_path = out_dir / SIZE_PLOT
    sized = [r for r in ok if any(_num(r.get(column)) is not None for column, _ in SIZE_SERIES)]
    if sized:
        if len(sized) > PLOT_DETAIL_LIMIT:
            ordered = sorted(sized, key=lambda r: _num(r.get("flash_bytes")) or 0.0)
            picks = np.linspace(0, len(ordered) - 1, PLOT_DETAIL_LIMIT).round().astype(int)
            lines += [f"{PLOT_DETAIL_LIMIT} of {len(sized)} candidates, evenly spaced in Flash (all are in the "
                      "table below).", ""]
            sized = [ordered[i] for i in sorted(set(picks.tolist()))]
        _size_plot(sized, size_path)
        lines += [f"![Size figures]({SIZE_PLOT})", "",
                  "- Vela Flash: read-only memory of the compiled model (encoded weights, scales, biases, tables).",
                  "- RHS bound: sum over layers of N·(s·b + H2(s)) bits, the size model's bound.",
                  "- Empirical entropy: N·H(codes) of the deployed int8 weights, the bound's left side.",
                  "- Coded mask: each nonzero mask range-coded plus b bits per nonzero value.",
                  "- Vela encoded weights: the weight stream Vela writes for the NPU.", ""]
    else:
        size_path.unlink(missing_ok=True)
        lines += ["No ok measurement has size figures; size plot skipped.", ""]

    lines += ["## Measurements", ""]
    lines += [_table(ok, MEASUREMENT_HEADERS) if ok else "No ok measurements.", ""]

    lines += ["## Failed", ""]
    if failed:
        failed_columns = [MEASUREMENT_HEADERS[i] for i in (0, 1, 2, 3)] + [
            ("status", lambda r: _text(r.get("status")), False),
            ("error", lambda r: _text(r.get("error"), limit=500), False)]
        lines += [_table(failed, failed_columns), ""]
    else:
        lines += ["None.", ""]

    lines += _provenance(rows)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


# -- HTML ---------------------------------------------------------------------------------------------------

HTML_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
              "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}th,td{border:1px solid #ccc;"
              "padding:2px 6px}th{background:#f3f3f3}td.r{text-align:right}img{max-width:100%}"
              "code{background:#f3f3f3;padding:0 3px}")


def write_html(markdown_path: Path) -> Path:
    """``report.html`` beside ``report.md``: the same content, self-contained (PNGs embedded as base64),
    readable in any browser or CI artifact viewer."""
    import base64
    import html
    import re

    markdown_path = Path(markdown_path)
    lines = markdown_path.read_text(encoding="utf-8").splitlines()
    body: list[str] = []
    index = 0

    def inline(text: str) -> str:
        text = html.escape(text)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)

    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, source = re.match(r"!\[(.*)\]\((.*)\)", line).groups()
            image = markdown_path.parent / source
            data = base64.b64encode(image.read_bytes()).decode() if image.is_file() else ""
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("|"):
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                rows.append(lines[index])
                index += 1
            body.append(_html_table(rows, inline))
            continue
        elif line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append(f"<li>{inline(lines[index][2:])}</li>")
                index += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        index += 1
    title = next((line.lstrip("# ") for line in lines if line.startswith("# ")), "UDC harness report")
    path = markdown_path.with_suffix(".html")
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                    f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n",
                    encoding="utf-8")
    return path


def _html_table(rows: list[str], inline: Callable[[str], str]) -> str:
    import re

    def cells(row: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]

    header, alignment, data = cells(rows[0]), cells(rows[1]), [cells(r) for r in rows[2:]]
    right = [a.endswith(":") for a in alignment]
    head = "".join(f"<th>{inline(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=r" if r else ""}>{inline(c)}</td>' for c, r in zip(row, right))
                   + "</tr>" for row in data)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
