"""Targets: one module per target behind the ``Target`` interface (``targets.base``)."""

from __future__ import annotations

from harness.errors import UsageError
from targets.base import Target

TARGETS = {
    "vela": "Vela estimator for the Ethos-U55 + host TFLM interpreter for outputs (works everywhere)",
    "qemu-an547": "TFLM firmware on QEMU's Cortex-M55 (mps3-an547): ELF Flash, instructions, bit-exact outputs",
    "corstone300": "Vela-compiled model in TFLM firmware on Arm's Corstone-300 FVP: ELF Flash, Ethos-U55 PMU cycles",
    "board": "the corstone300 firmware on an Ethos-U55 board (pyOCD flash, serial port): PMU cycles, CPU cycles",
}


def get_target(name: str, **options) -> Target:
    if name == "vela":
        from targets.vela import VelaTarget

        return VelaTarget(**options)
    if name == "qemu-an547":
        from targets.qemu_an547 import QemuAn547Target

        return QemuAn547Target(**options)
    if name == "corstone300":
        from targets.corstone300 import Corstone300Target

        return Corstone300Target(**options)
    if name == "board":
        from targets.board import BoardTarget

        return BoardTarget(**options)
    raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
