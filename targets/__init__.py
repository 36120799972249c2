"""Targets: one module per target behind the ``Target`` interface (``targets.base``)."""

from __future__ import annotations

from harness.errors import UsageError
from targets.base import Target

TARGETS = {
    "vela": "Vela estimator for the Ethos-U55 + host TFLM interpreter for outputs (works everywhere)",
}


def get_target(name: str, **options) -> Target:
    if name == "vela":
        from targets.vela import VelaTarget

        return VelaTarget(**options)
    raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
