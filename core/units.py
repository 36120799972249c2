"""Sizes as users write them: budgets in KB (1000 bytes), KiB (1024 bytes), MB, MiB or plain bytes,
parsed into bytes. The harness stores bytes and shows Flash in KiB."""

from __future__ import annotations

import re

from core.errors import UsageError

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2, "mib": 1024 ** 2}


def parse_budget(text: str | int | float) -> float:
    """Bytes of compressed size from ``24KB``, ``0.5MB``, ``20KiB`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"budget {text!r} is not a positive size; write it like 24KB, 0.5MB, 20KiB or 30000 (bytes)")
    return float(match.group(1)) * _UNITS[unit]

