"""The report's sections on every measurement: accuracy against Flash with its fronts, the size figures,
the measurement table, the failures and the provenance."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from results.report.cells import (MISSING, Column, integer, json_text, kib, latency_ms, markdown_table, name, num,
                                  pct, short_hash, strategy, table, text)
from results.report.figures import PLOT_DETAIL_LIMIT
from results.report.pareto import pareto_front, strategy_fronts
from results.report.plots import SIZE_SERIES, accuracy_plot, size_plot

ACCURACY_PLOT = "accuracy_vs_flash.png"
SIZE_PLOT = "size_figures.png"

MEASUREMENT_HEADERS: list[Column] = [
    ("candidate", name, False),
    ("strategy", strategy, False),
    ("hash", short_hash, False),
    ("target", lambda r: text(r.get("target")), False),
    ("flash KiB", lambda r: kib(r.get("flash_bytes")), True),
    ("sram KiB", lambda r: kib(r.get("sram_bytes")), True),
    ("rhs bound KiB", lambda r: kib(r.get("rhs_bound_bytes")), True),
    ("empirical entropy KiB", lambda r: kib(r.get("empirical_entropy_bytes")), True),
    ("coded mask KiB", lambda r: kib(r.get("coded_mask_bytes")), True),
    ("npu cycles", lambda r: integer(r.get("npu_cycles")), True),
    ("latency ms", latency_ms, True),
    ("accuracy int8 %", lambda r: pct(r.get("accuracy_int8")), True),
    ("accuracy float %", lambda r: pct(r.get("accuracy_float")), True),
    ("samples", lambda r: integer(r.get("accuracy_samples")), True),
    ("tflm arena KiB", lambda r: kib(r.get("tflm_arena_bytes")), True),
]


def _front_text(front: list[dict], limit: int = 8) -> str:
    listed = ", ".join(f"{name(r)} ({kib(r['flash_bytes'])}: {pct(r['accuracy_int8'])})" for r in front[:limit])
    return listed + (f", … {len(front) - limit} more" if len(front) > limit else "")


def accuracy_plot_name(target: str, first: bool) -> str:
    return ACCURACY_PLOT if first else f"accuracy_vs_flash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', target)}.png"


def accuracy_section(ok: list[dict], out_dir: Path) -> list[str]:
    """Accuracy vs Flash with its Pareto fronts, one plot per target: flash_bytes is Vela's compiled model on
    ``vela`` but the whole linked image on a firmware target, so the two never share an axis or a front."""
    lines = ["## Accuracy vs Flash", ""]
    plotted = [r for r in ok if num(r.get("flash_bytes")) is not None
               and (num(r.get("accuracy_int8")) is not None or num(r.get("accuracy_float")) is not None)]
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
        candidates = [i for i, r in enumerate(rows) if num(r.get("accuracy_int8")) is not None]
        front = [candidates[j] for j in pareto_front(
            [(float(rows[i]["flash_bytes"]), float(rows[i]["accuracy_int8"])) for i in candidates])]
        plot = accuracy_plot_name(target, position == 0)
        accuracy_plot(rows, front, out_dir / plot, target)
        lines += [f"![Accuracy vs Flash on {target}]({plot})", "",
                  "Filled markers: int8 accuracy on the target; hollow: float accuracy before export.", ""]
        front_rows = sorted((rows[i] for i in front), key=lambda r: (r["flash_bytes"], -r["accuracy_int8"]))
        lines += [f"### Pareto front on {target} (max int8 accuracy, min Flash)", ""]
        if front_rows:
            lines += [table(front_rows, [MEASUREMENT_HEADERS[i] for i in (0, 1, 2, 3, 4, 11)]), ""]
        else:
            lines += ["No ok measurement has both int8 accuracy and Flash.", ""]
        fronts = strategy_fronts(rows)
        if len(fronts) > 1:
            lines += [f"### Pareto front per strategy on {target}", "",
                      markdown_table(["strategy", "on its front", "front (Flash KiB: int8 acc %)"],
                                     [[each, str(len(members)), _front_text(members)]
                                      for each, members in fronts.items()], right=[1]), ""]
    return lines


def size_section(ok: list[dict], out_dir: Path) -> list[str]:
    """The size figures of each candidate as bars (a sample evenly spaced in Flash beyond the plot's limit)."""
    lines = ["## Size figures", ""]
    path = out_dir / SIZE_PLOT
    sized = [r for r in ok if any(num(r.get(column)) is not None for column, _ in SIZE_SERIES)]
    if not sized:
        path.unlink(missing_ok=True)
        return lines + ["No ok measurement has size figures; size plot skipped.", ""]
    if len(sized) > PLOT_DETAIL_LIMIT:
        ordered = sorted(sized, key=lambda r: num(r.get("flash_bytes")) or 0.0)
        picks = np.linspace(0, len(ordered) - 1, PLOT_DETAIL_LIMIT).round().astype(int)
        lines += [f"{PLOT_DETAIL_LIMIT} of {len(sized)} candidates, evenly spaced in Flash (all are in the "
                  "table below).", ""]
        sized = [ordered[i] for i in sorted(set(picks.tolist()))]
    size_plot(sized, path)
    return lines + [f"![Size figures]({SIZE_PLOT})", "",
                    "- Vela Flash: read-only memory of the compiled model (encoded weights, scales, biases, tables).",
                    "- RHS bound: sum over layers of N·(s·b + H2(s)) bits, the size model's bound.",
                    "- Empirical entropy: N·H(codes) of the deployed int8 weights, the bound's left side.",
                    "- Coded mask: each nonzero mask range-coded plus b bits per nonzero value.",
                    "- Vela encoded weights: the weight stream Vela writes for the NPU.", ""]


def measurements_section(ok: list[dict], failed: list[dict]) -> list[str]:
    """Every ok measurement, then every failed one with its error."""
    lines = ["## Measurements", "", table(ok, MEASUREMENT_HEADERS) if ok else "No ok measurements.", "",
             "## Failed", ""]
    if not failed:
        return lines + ["None.", ""]
    failed_columns = [MEASUREMENT_HEADERS[i] for i in (0, 1, 2, 3)] + [
        ("status", lambda r: text(r.get("status")), False),
        ("error", lambda r: text(r.get("error"), limit=500), False)]
    return lines + [table(failed, failed_columns), ""]


def provenance_section(rows: list[dict]) -> list[str]:
    """Git SHAs, hosts, time span, tool versions and target settings of the rows."""
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
            settings[json_text(r["target_settings"])].add(r.get("target") or MISSING)
    if settings:
        lines += ["Target settings:", "",
                  markdown_table(["targets", "settings"],
                                 [[", ".join(sorted(t)), f"`{s}`"] for s, t in sorted(settings.items())]),
                  ""]
    else:
        lines += ["Target settings: " + MISSING, ""]
    return lines
