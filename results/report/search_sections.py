"""The report's sections on searched candidates: the budget verdicts, each strategy's best at each
budget beside uniform compression, per-layer decisions, the number-format comparison and the ablation."""

from __future__ import annotations

from pathlib import Path

from core.search_result import SearchResult
from results.report.cells import MISSING, Column, kib, markdown_table, name, num, pct, search_of, strategy, table, text
from results.report.plots import decisions_plot, weight_norm_plot

DECISIONS_PLOT = "decisions.png"
NORM_PLOT = "weight_norm.png"
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
    ("budget KB", lambda r: f"{search_of(r).budget_bytes / 1000:g}", True),
    ("size bound KB", lambda r: f"{search_of(r).size_bits / 8000:.2f}", True),
    ("gamma(pi) meets", lambda r: {True: "yes", False: "NO", None: MISSING}[search_of(r).constraint_met_argmax], False),
    ("emitted meets", lambda r: "yes" if search_of(r).constraint_met else "NO", False),
    ("repair moves", lambda r: str(len(search_of(r).repair_moves or [])), True),
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


def _strategies_at_budgets(rows: list[dict], searched: list[dict]) -> list[str]:
    """Per budget, each strategy's most accurate candidate beside the uniform candidate whose size bound
    is nearest the budget."""
    uniform = [r for r in rows if strategy(r) == "uniform" and num(r.get("rhs_bound_bytes")) is not None]
    header = ["budget KB", "strategy", "candidate", "flash KiB", "size bound KB", "int8 acc %"]
    body = []
    for budget in sorted({search_of(r).budget_bytes for r in searched}):
        at_budget = [r for r in searched if search_of(r).budget_bytes == budget and not search_of(r).ablation]
        best: dict[str, dict] = {}
        for row in at_budget:
            current = best.get(strategy(row))
            if current is None or (num(row.get("accuracy_int8")) or 0) > (num(current.get("accuracy_int8")) or 0):
                best[strategy(row)] = row
        if uniform:
            best["uniform (nearest size)"] = min(uniform, key=lambda r: abs(r["rhs_bound_bytes"] - budget))
        for each, row in sorted(best.items()):
            body.append([f"{budget / 1000:g}", each, name(row), kib(row.get("flash_bytes")),
                         f"{(num(row.get('rhs_bound_bytes')) or 0) / 1000:.2f}", pct(row.get("accuracy_int8"))])
    return ["### Strategies at each budget", "", markdown_table(header, body, right=(0, 3, 4, 5)), ""]


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
               *(c for c in SEARCH_COLUMNS if c[0] in ("budget KB", "gamma(pi) meets", "emitted meets",
                                                       "int8 acc %", "search s"))]
    return ["### Ablation (the UDC paper's Table 3)", "",
            "\"lambda tuning\": the row searched once per lambda and kept the best that met the budget.", "",
            table(ablation, columns), ""]


def search_section(rows: list[dict], out_dir: Path) -> list[str]:
    """Searched candidates with their budget verdicts, then the comparisons at each budget."""
    searched = [r for r in rows if search_of(r).budget_bytes is not None]
    if not searched:
        return []
    lines = ["## Searches under a size budget", "",
             "gamma(pi) meets: the argmax configuration after search; emitted meets: the candidate as finetuned "
             "(after any repair). ||theta||^2: weight norm at the start of finetuning and after it with Q-hat / "
             "plain Q (the paper's Fig. 3).", "", table(searched, SEARCH_COLUMNS), ""]
    return (lines + _strategies_at_budgets(rows, searched) + _decisions(searched, out_dir)
            + _number_format(searched, out_dir) + _ablation(searched))
