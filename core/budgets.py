"""Budgets as users state them: ``flash=32KiB``, ``npu_cycles=40000``, ``sram=30KiB``, ``macs=2000000``,
``size_bound=24KB``, several at once separated by commas; a plain size (``38KiB``) is a Flash budget.

Flash, SRAM and NPU cycles are what Vela reports for the compiled model (for the configured
accelerator, system config and memory mode); MACs are counted; ``size_bound`` is the UDC paper's
bound N*(s*b + H2(s)) on the compressed weights, kept for the paper's tables.
"""

from __future__ import annotations

import re

from core.errors import UsageError
from core.units import parse_budget

SIZES = ("flash", "sram", "size_bound")  # bytes, written with a unit
COUNTS = ("npu_cycles", "macs")  # plain counts
KINDS = ("flash", "size_bound", "macs", "npu_cycles", "sram")
SEARCHED = ("flash", "size_bound", "macs")  # a search's penalty uses the first of these a budget names
FORMS = "flash=32KiB, size_bound=24KB, macs=2000000, npu_cycles=40000, sram=30KiB (commas join several)"


def parse_budgets(text: str) -> dict[str, float]:
    """{kind: limit} of one budget text; a plain size is Flash."""
    limits: dict[str, float] = {}
    for part in str(text).split(","):
        kind, _, value = part.strip().rpartition("=")
        kind = kind.strip().lower() or "flash"
        if kind not in KINDS:
            raise UsageError(f"budget {text!r}: unknown kind {kind!r}; write it as one of {FORMS}")
        if kind in limits:
            raise UsageError(f"budget {text!r} names {kind} twice; give each kind once")
        limits[kind] = parse_budget(value) if kind in SIZES else _count(value, kind, text)
    return limits


def _count(value: str, kind: str, text: str) -> float:
    if not re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?(e[0-9]+)?\s*", value) or float(value) <= 0:
        raise UsageError(f"budget {text!r}: {kind}={value.strip()!r} is not a positive count; write it like {kind}=40000")
    return float(value)


def searched_kind(limits: dict[str, float]) -> str | None:
    """The kind a search's penalty constrains: Flash, else the size bound, else MACs; None where only
    measured figures (NPU cycles, SRAM) are budgeted."""
    return next((kind for kind in SEARCHED if kind in limits), None)


def describe(kind: str, value: float) -> str:
    """``value`` of ``kind`` as a person reads it (sizes in bytes, counts as counts)."""
    if kind in SIZES:
        return f"{value:,.0f} B {'Flash' if kind == 'flash' else 'SRAM' if kind == 'sram' else 'size bound'}"
    return f"{value:,.0f} {'NPU cycles' if kind == 'npu_cycles' else 'MACs'}"


def label(limits: dict[str, float]) -> str:
    """A name part for a candidate: ``flash38.912kB``, ``size24kB``, ``2000000macs``, joined by ``-``."""
    parts = []
    for kind in KINDS:
        if kind in limits:
            value = limits[kind]
            if kind == "size_bound":
                parts.append(f"{value / 1000:g}kB")  # the paper's budgets keep their names (udc-mbv2-24kB)
            elif kind in SIZES:
                parts.append(f"{kind}{value / 1000:g}kB")
            else:
                parts.append(f"{value:.0f}{'macs' if kind == 'macs' else 'cycles'}")
    return "-".join(parts)


def text(limits: dict[str, float]) -> str:
    """The budget as ``parse_budgets`` reads it back."""
    return ",".join(f"{kind}={limits[kind]:.0f}" for kind in KINDS if kind in limits)
