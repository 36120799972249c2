"""The report's history section: each metric of a (candidate, target) over the times it was measured,
where it was measured more than once, with the change points of each series (``results.change_points``)
marked and listed with the commits between the point and the one before it."""

from __future__ import annotations

from pathlib import Path

from results.change_points import change_points
from results.regress import METRICS
from results.report.cells import MISSING, markdown_table, name, num, scaled
from results.report.figures import new_figure, save, styles

HISTORY_PLOT = "history.png"
HISTORY_SERIES_LIMIT = 8  # (candidate, target) lines in the history plot: those measured most often
# (column, axis label, scale) of the metrics followed over runs.
HISTORY_METRICS = (("accuracy_int8", "int8 accuracy (%)", 100.0), ("flash_bytes", "Flash (KiB)", 1 / 1024),
                   ("latency_s", "latency (ms)", 1000.0), ("npu_cycles", "NPU cycles", 1.0))


def _history_plot(series: dict, path: Path) -> None:
    plotted = [(m, label, scale) for m, label, scale in HISTORY_METRICS
               if any(group[m].notna().any() for group in series.values())]
    figure = new_figure(9.0, 2.4 * len(plotted) + 0.6)
    style = styles(f"{c} on {t}" for c, t in series)
    for panel, (metric, label, scale) in enumerate(plotted, 1):
        axes = figure.add_subplot(len(plotted), 1, panel)
        for (candidate, target), group in series.items():
            marker, colour = style[f"{candidate} on {target}"]
            values = group.dropna(subset=[metric])
            when = values["when"].dt.tz_localize(None)
            axes.plot(when, values[metric] * scale, marker=marker, color=colour, linewidth=1,
                      label=f"{candidate} on {target}")
            # A new model under the same name (a search or training change): ringed, so a step in a metric
            # can be told from the same model measured differently.
            new_model = (values["hash"] != values["hash"].shift()) & values["hash"].shift().notna()
            axes.scatter(when[new_model], values[metric][new_model] * scale, s=160, facecolors="none",
                         edgecolors=colour, linewidths=1.2, zorder=4)
            changed = _changes(values, metric)
            axes.scatter(when.iloc[changed], values[metric].iloc[changed] * scale, s=90, marker="x", color="red",
                         linewidths=2, zorder=5)
        axes.set_ylabel(label, fontsize=8)
        axes.grid(alpha=0.3)
    figure.axes[0].set_title("History over runs (UTC); ringed: a new model under the same name; red x: a change point")
    figure.axes[0].legend(fontsize=7, ncol=2)
    figure.autofmt_xdate()
    save(figure, path)


def history_section(rows: list[dict], out_dir: Path) -> list[str]:
    """The plot and a first-to-last table of the candidates measured most often, or nothing."""
    import pandas as pd

    path = out_dir / HISTORY_PLOT
    metrics = [m for m, _, _ in HISTORY_METRICS]
    frame = pd.DataFrame([{"candidate": name(r), "target": r.get("target") or MISSING, "when": r.get("created_at"),
                           "hash": r.get("candidate_hash"), "sha": r.get("git_sha") or "?",
                           **{m: num(r.get(m)) for m in metrics}}
                          for r in rows if r.get("status") == "ok" and r.get("created_at") is not None],
                         columns=["candidate", "target", "when", "hash", "sha", *metrics])
    frame["when"] = pd.to_datetime(frame["when"], utc=True, format="mixed")
    counts = frame.groupby(["candidate", "target"])["when"].nunique()
    repeated = counts[counts > 1].sort_index().sort_values(ascending=False, kind="stable")
    if repeated.empty:
        path.unlink(missing_ok=True)
        return []
    shown = list(repeated.index[:HISTORY_SERIES_LIMIT])
    series = {key: group.sort_values("when") for key, group in frame.groupby(["candidate", "target"]) if key in shown}
    _history_plot(series, path)
    body = []
    for (candidate, target), group in sorted(series.items()):
        first, last = group.iloc[0], group.iloc[-1]
        body.append([candidate, target, str(int(counts[(candidate, target)])), str(group["hash"].nunique()),
                     f"{first.when:%Y-%m-%d %H:%M}", f"{last.when:%Y-%m-%d %H:%M}"]
                    + [f"{scaled(first[m], scale)} → {scaled(last[m], scale)}" for m, _, scale in HISTORY_METRICS])
    lines = ["## History", "", f"![History]({HISTORY_PLOT})", ""]
    if len(repeated) > len(shown):
        lines += [f"The {len(shown)} of {len(repeated)} candidates measured most often.", ""]
    lines += [markdown_table(["candidate", "target", "measurements", "models", "first", "last",
                              *(label for _, label, _ in HISTORY_METRICS)], body), ""]
    return lines + _change_table(frame)


def _changes(values, metric: str) -> list[int]:
    """Positions in ``values`` (one series, in time order, without gaps in ``metric``) of its change points."""
    deterministic, _, threshold, kind = METRICS[metric]
    return change_points(list(values[metric]), deterministic, threshold, relative=kind == "relative")


def _change_table(frame) -> list[str]:
    """Every series' change points: when, the value before and after, and the commits in between."""
    body = []
    for (candidate, target), group in sorted(frame.groupby(["candidate", "target"])):
        group = group.sort_values("when")
        for metric, label, scale in HISTORY_METRICS:
            values = group.dropna(subset=[metric])
            for index in _changes(values, metric):
                before, after = values.iloc[index - 1], values.iloc[index]
                body.append([candidate, target, label, f"{after.when:%Y-%m-%d %H:%M}",
                             f"{scaled(before[metric], scale)} → {scaled(after[metric], scale)}",
                             f"{str(before.sha)[:10]}..{str(after.sha)[:10]}"])
    if not body:
        return ["No change points: every series stays within its window (lookback test, README: Regression).", ""]
    return ["### Change points", "", markdown_table(["candidate", "target", "metric", "when", "change", "commits"],
                                                    body), ""]
