"""The strategies compared at each budget: over seeds, each strategy's measured Flash and int8 accuracy
(mean and 95% interval), and a paired test of UDC against every other strategy and against the best uniform
candidate that fits the same measured Flash budget (pairs: runs of one seed).

The interval is Student's t over seeds; the test is the paired t-test over seeds (scipy's ``ttest_rel``),
which needs two seeds or more. Whether UDC wins is what these figures say, nothing else.
"""

from __future__ import annotations

import math
import re
import statistics

from core import budgets
from results.report.cells import MISSING, kib, markdown_table, name, num, search_of, strategy

SEED_SUFFIX = re.compile(r"-seed\d+$")
REFERENCE = "udc"


def budget_text(row: dict) -> str | None:
    """The budget a searched row was made under, as ``core.budgets`` writes it."""
    search = search_of(row)
    if search.budgets:
        return budgets.text(search.budgets)
    if search.budget_bytes is not None:
        return budgets.text({"size_bound": search.budget_bytes})
    if search.budget_macs is not None:
        return budgets.text({"macs": search.budget_macs})
    return None


def seed_of(row: dict) -> int:
    seed = search_of(row).seed
    return 0 if seed is None else int(seed)


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% interval (Student's t; None for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def paired_p(reference: dict[int, float], other: dict[int, float]) -> float | None:
    """The paired t-test's two-sided p-value over the seeds both have (None under two, or no variation)."""
    seeds = sorted(set(reference) & set(other))
    if len(seeds) < 2:
        return None
    differences = [reference[s] - other[s] for s in seeds]
    if all(d == differences[0] for d in differences):
        return None
    from scipy.stats import ttest_rel

    return float(ttest_rel([reference[s] for s in seeds], [other[s] for s in seeds]).pvalue)


def _accuracy(rows: list[dict]) -> dict[int, float]:
    return {seed_of(r): num(r.get("accuracy_int8")) for r in rows if num(r.get("accuracy_int8")) is not None}


def best_uniform(uniform: list[dict], limit: float | None) -> tuple[str, list[dict]] | None:
    """The (bits, nonzero) pair of the uniform sweep with the best mean int8 accuracy among those whose every
    seed's measured Flash is within ``limit``: (its name, its rows)."""
    if limit is None:
        return None
    pairs: dict[str, list[dict]] = {}
    for row in uniform:
        pairs.setdefault(SEED_SUFFIX.sub("", name(row)), []).append(row)
    fitting = {key: rows for key, rows in pairs.items()
               if all((num(r.get("flash_bytes")) or math.inf) <= limit for r in rows) and _accuracy(rows)}
    if not fitting:
        return None
    key = max(fitting, key=lambda k: statistics.fmean(_accuracy(fitting[k]).values()))
    return key, fitting[key]


def comparison_section(rows: list[dict], searched: list[dict]) -> list[str]:
    uniform = [r for r in rows if strategy(r) == "uniform" and r.get("status", "ok") == "ok"]
    header = ["budget", "strategy", "seeds", "measured Flash KiB", "meets (measured)", "int8 acc % (95% CI)",
              f"p vs {REFERENCE}"]
    body = []
    for text in sorted({t for r in searched if (t := budget_text(r)) is not None and not search_of(r).ablation}):
        at_budget = [r for r in searched if budget_text(r) == text and not search_of(r).ablation]
        groups: dict[str, list[dict]] = {}
        for row in at_budget:
            groups.setdefault(strategy(row), []).append(row)
        flash_limit = budgets.parse_budgets(text).get("flash")
        chosen = best_uniform(uniform, flash_limit)
        if chosen is not None:
            groups[chosen[0]] = chosen[1]
        reference = _accuracy(groups.get(REFERENCE, []))
        for each in sorted(groups, key=lambda k: (k != REFERENCE, k)):
            group = groups[each]
            accuracy = _accuracy(group)
            flashes = [num(r.get("flash_bytes")) for r in group if num(r.get("flash_bytes")) is not None]
            verdicts = [search_of(r).met() for r in group if search_of(r).budgets or search_of(r).budget_bytes]
            met = f"{sum(verdicts)}/{len(verdicts)}" if verdicts else "fits"
            if accuracy:
                mean, half = interval([100 * a for a in accuracy.values()])
                acc = f"{mean:.2f}" + (f" ± {half:.2f}" if half is not None else "")
            else:
                acc = MISSING
            p = None if each == REFERENCE else paired_p(reference, accuracy)
            body.append([text, each, str(len(group)), kib(statistics.fmean(flashes)) if flashes else MISSING, met, acc,
                         MISSING if p is None else f"{p:.3g}"])
    if not body:
        return []
    return ["### Strategies at each budget", "",
            f"Over seeds: mean int8 accuracy with its 95% interval (Student's t), the paired t-test of {REFERENCE} "
            "against each (pairs: the same seed; two seeds or more), and the uniform (bits, nonzero) pair with the "
            "best mean accuracy whose measured Flash fits the budget on every seed.", "",
            markdown_table(header, body, right=(2, 3, 5, 6)), ""]


def flash_model_section(rows: list[dict]) -> list[str]:
    """The calibrated Flash model's prediction beside Vela's Flash for every measured candidate that has one."""
    predicted = [r for r in rows if num(_predicted(r)) is not None and num(r.get("flash_bytes"))]
    if not predicted:
        return []
    errors = [(_predicted(r) - r["flash_bytes"]) / r["flash_bytes"] for r in predicted]
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    body = [[name(r), f"{_predicted(r):,.0f}", f"{r['flash_bytes']:,.0f}", f"{100 * e:+.2f}"]
            for r, e in zip(predicted, errors)]
    return ["### Flash model against Vela", "",
            f"Worst case: {100 * errors[worst]:+.2f}% ({name(predicted[worst])}) over {len(predicted)} candidates.", "",
            markdown_table(["candidate", "predicted B", "Vela Flash B", "error %"], body, right=(1, 2, 3)), ""]


def _predicted(row: dict):
    return row.get("flash_predicted_bytes", (row.get("extra") or {}).get("flash_predicted_bytes"))
