"""One value to one report cell, and the markdown table the cells go into.

Accuracies are stored as fractions in [0, 1] and shown in percent; sizes are stored in bytes and shown in
KiB. A value that is missing, not a number or not finite shows as ``MISSING``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

from core.search_result import SearchResult

MISSING = "—"

# (header, cell of a row, right-aligned)
Column = tuple[str, Callable[[dict], str], bool]


def num(value: Any) -> float | None:
    """The value as a finite float, None where it is missing or not a number (booleans included)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def kib(value: Any) -> str:
    value = num(value)
    return MISSING if value is None else f"{value / 1024:.2f}"


def pct(value: Any) -> str:
    value = num(value)
    return MISSING if value is None else f"{100 * value:.2f}"


def integer(value: Any) -> str:
    value = num(value)
    return MISSING if value is None else f"{int(round(value)):,}"


def latency_ms(row: dict) -> str:
    value = num(row.get("latency_s"))
    if value is None:
        return MISSING
    return f"{1000 * value:.3f}" + (" (est.)" if row.get("latency_is_estimate") else "")


def text(value: Any, limit: int = 0) -> str:
    if value is None or value == "":
        return MISSING
    joined = " ".join(str(value).split())
    if limit and len(joined) > limit:
        joined = joined[:limit - 1] + "…"
    return joined


def ratio(numerator: Any, denominator: Any) -> str:
    numerator, denominator = num(numerator), num(denominator)
    return MISSING if numerator is None or not denominator else f"{numerator / denominator:.2f}x"


def scaled(value: Any, scale: float) -> str:
    value = num(value)
    if value is None:
        return MISSING
    return f"{value * scale:,.0f}" if abs(value * scale) >= 1000 else f"{value * scale:.4g}"


def short_hash(row: dict) -> str:
    return (row.get("candidate_hash") or "")[:12] or MISSING


def name(row: dict) -> str:
    return row.get("candidate_name") or short_hash(row)


def strategy(row: dict) -> str:
    return row.get("strategy") or "unknown"


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def search_of(row: dict) -> SearchResult:
    """What the search recorded about the row's candidate (nothing set for a candidate that was not searched)."""
    return SearchResult.from_meta((row.get("extra") or {}).get("search"))


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


def table(rows: list[dict], columns: list[Column]) -> str:
    """Rows as a markdown table of the given columns."""
    return markdown_table([c[0] for c in columns], [[c[1](r) for c in columns] for r in rows],
                          right=[i for i, c in enumerate(columns) if c[2]])
