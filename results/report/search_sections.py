"""The report's sections on searched candidates: the budget verdicts, each strategy's best at each
budget beside uniform compression, per-layer decisions, the number-format comparison and the ablation."""

from __future__ import annotations

from pathlib import Path

from core.search_result import SearchResult
from results.report.cells import (MISSING, Column, kib, markdown_table, name, num, pct, scaled, search_of, strategy,
                                  table, text)
from results.report.comparison import budget_text, comparison_section, flash_model_section
from results.report.plots import decisions_plot, weight_norm_plot

DECISIONS_PLOT = "decisions.png"
NORM_PLOT = "weight_norm.png"
YES_NO = {True: "yes", False: "NO", None: MISSING}
DECISIONS_LIMIT = 6  # searched candidates in the per-layer table and plot (the most accurate ones)
ABLATION_COMPONENTS = ("rejection", "mc_samples", "projection", "lambda_tuning")


def weight_norms(search: SearchResult) -> str:
    """||theta||^2 at the start of finetuning and after it with Q-hat and with plain Q."""
    norms = search.weight_norm or {}
    parts = [f"{label} {norms[key]:.3g}" for key, label in (("before", "start"), ("after_qhat", "Q-hat"),
                                                             ("after_plain", "Q")) if num(norms.get(key)) is not None]
    return ", ".join(parts) or MISSING


SEARCH_COLUMNS: list[Column] = [
    ("candidate", name, False),
    ("strategy", strategy, False),
    ("budget", lambda r: budget_text(r) or MISSING, False),
    ("size bound KB", lambda r: scaled(search_of(r).size_bits, 1 / 8000), True),
    ("gamma(pi) meets", lambda r: YES_NO[search_of(r).constraint_met_argmax], False),
    ("emitted meets (predicted)", lambda r: YES_NO[search_of(r).constraint_met], False),
    ("repair moves", lambda r: str(len(search_of(r).repair_moves or [])), True),
    ("meets (measured)", lambda r: YES_NO[search_of(r).constraint_met_measured], False),
    ("measured moves", lambda r: str(len(search_of(r).measured_moves or [])), True),
    ("Flash predicted KiB", lambda r: kib(search_of(r).flash_bytes_predicted), True),
    ("flash KiB", lambda r: kib(r.get("flash_bytes")), True),
    ("int8 acc %", lambda r: pct(r.get("accuracy_int8")), True),
    ("search s", lambda r: text((search_of(r).timings_s or {}).get("search_s")), True),
    ("finetune s", lambda r: text((search_of(r).timings_s or {}).get("finetune_s")), True),
    ("||theta||^2 (Fig. 3)", lambda r: weight_norms(search_of(r)), False),
]


def decisions_table(rows: list[dict]) -> str:
    """Layers down, candidates across (a pandas frame keeps the layers of every candidate in order)."""
    import pandas as pd

    def cell(decision: dict) -> str:
        if decision.get("op") == "identity":
            return "skip"
        return " ".join(f"{letter}{decision[key]:g}" for key, letter in (("bits", "b"), ("nonzero", "s"), ("width", "w"))
                        if num(decision.get(key)) is not None) or MISSING

    frame = pd.DataFrame({name(r): {layer: cell(d) for layer, d in search_of(r).decisions.items()} for r in rows})
    frame = frame.fillna(MISSING)
    return markdown_table(["layer", *frame.columns], [[layer, *values] for layer, values in zip(frame.index,
                                                                                            frame.values.tolist())])


def _decisions(searched: list[dict], out_dir: Path) -> list[str]:
    with_decisions = sorted((r for r in searched if search_of(r).decisions),
                            key=lambda r: -(num(r.get("accuracy_int8")) or 0.0))
    if not with_decisions:
        (out_dir / DECISIONS_PLOT).unlink(missing_ok=True)
        return []
    shown = with_decisions[:DECISIONS_LIMIT]
    decisions_plot(shown, out_dir / DECISIONS_PLOT)
    return ["### Per-layer decisions", "", f"![Per-layer decisions]({DECISIONS_PLOT})", "",
            *([f"The {len(shown)} most accurate of {len(with_decisions)} searched candidates.", ""]
              if len(with_decisions) > len(shown) else []),
            decisions_table(shown), "",
            "b: weight bits, s: nonzero fraction, w: width fraction; 'skip': the block's identity option.", ""]


def _number_format(searched: list[dict], out_dir: Path) -> list[str]:
    compared = [r for r in searched if (search_of(r).weight_norm or {}).get("trajectory_plain")]
    if not compared:
        (out_dir / NORM_PLOT).unlink(missing_ok=True)
        return []
    weight_norm_plot(compared, out_dir / NORM_PLOT)
    return ["### Number format (Fig. 3)", "", f"![Weight norm]({NORM_PLOT})", "",
            "Each searched configuration finetuned twice from the same weights: with Q-hat, whose grid starts "
            "at the pruning boundary beta, and with plain Q. The paper's Fig. 3 shows plain Q's norm growing "
            "as weights climb over the pruning boundary.", ""]


def _ablation(searched: list[dict]) -> list[str]:
    ablation = [r for r in searched if search_of(r).ablation]
    if not ablation:
        return []

    def mark(row: dict, component: str) -> str:
        return "✓" if search_of(row).ablation.get(component) else ""

    columns = [("row", lambda r: search_of(r).ablation["row"], False),
               *((c.replace("_", " "), lambda r, c=c: mark(r, c), False) for c in ABLATION_COMPONENTS),
               *(c for c in SEARCH_COLUMNS if c[0] in ("budget", "gamma(pi) meets", "emitted meets (predicted)",
                                                       "int8 acc %", "search s"))]
    return ["### Ablation (the UDC paper's Table 3)", "",
            "\"lambda tuning\": the row searched once per lambda and kept the best that met the budget.", "",
            table(ablation, columns), ""]


def search_section(rows: list[dict], out_dir: Path) -> list[str]:
    """Searched candidates with their budget verdicts, then the comparisons at each budget."""
    searched = [r for r in rows if budget_text(r) is not None]
    if not searched:
        return []
    lines = ["## Searches under a budget", "",
             "gamma(pi) meets: the argmax configuration after search; emitted meets (predicted): the candidate as "
             "finetuned (after any repair), by the searched cost model; meets (measured): the compiled candidate, "
             "by Vela's figures, after any measured moves. ||theta||^2: weight norm at the start of finetuning and "
             "after it with Q-hat / plain Q (the paper's Fig. 3).", "", table(searched, SEARCH_COLUMNS), ""]
    return (lines + comparison_section(rows, searched) + flash_model_section(rows) + _decisions(searched, out_dir)
            + _number_format(searched, out_dir) + _ablation(searched))
