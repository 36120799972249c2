"""Targets: one module per target behind the ``Target`` interface (``targets.base``), and the one
registry that says what each is, what it takes and where it looks.

A ``TargetEntry`` declares the target's name, a description, the class (``module:Class``, imported
only when the target is opened), the constructor options it takes from a config (``option:
"section.key"``) and the environment variables it reads when an option is left empty. ``open_target``
is how the CLI, ``run`` and the farm get a target: from a loaded config, checked usable here.

Adding a target: a module with a ``Target`` subclass and one entry below (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from core.errors import HarnessError, UsageError
from targets.base import Target

VELA_KEYS = {key: f"vela.{key}" for key in ("accelerator", "system_config", "memory_mode", "optimise")}
FIRMWARE_KEYS = {"tflm_root": "firmware.tflm_root", "model_id": "firmware.model_id", "baud": "firmware.baud"}
NPU_FIRMWARE_KEYS = {**VELA_KEYS, **FIRMWARE_KEYS, "driver": "firmware.ethosu_driver", "fvp": "firmware.fvp"}


@dataclass(frozen=True)
class TargetEntry:
    name: str
    description: str
    factory: str
    config_keys: dict[str, str] = field(default_factory=dict)
    env_vars: tuple[str, ...] = ()

    def load(self) -> type[Target]:
        module, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def options(self, config: dict) -> dict:
        """Constructor options from a loaded config; an empty value is left out, so the target falls back
        to its environment variable or default."""
        found = {}
        for option, place in self.config_keys.items():
            section, key = place.split(".")
            value = config.get(section, {}).get(key)
            if value:
                found[option] = value
        return found


TARGETS: dict[str, TargetEntry] = {entry.name: entry for entry in (
    TargetEntry("vela", "Vela estimator for the Ethos-U55 + host TFLM interpreter for outputs (works everywhere)",
                "targets.vela:VelaTarget", {**VELA_KEYS, "host_workers": "measure.host_workers"}),
    TargetEntry("qemu-an547", "TFLM firmware on QEMU's Cortex-M55 (mps3-an547): ELF Flash, instructions, bit-exact "
                "outputs", "targets.qemu_an547:QemuAn547Target", {**FIRMWARE_KEYS, "kernels": "firmware.kernels",
                                                                "model_loading": "firmware.model_loading"},
                ("TFLM_ROOT",)),
    TargetEntry("corstone300", "Vela-compiled model in TFLM firmware on Arm's Corstone-300 FVP: ELF Flash, Ethos-U55 "
                "PMU cycles", "targets.corstone300:Corstone300Target", NPU_FIRMWARE_KEYS,
                ("TFLM_ROOT", "ETHOSU_DRIVER", "FVP_CORSTONE300")),
    TargetEntry("board", "the corstone300 firmware on an Ethos-U55 board (pyOCD flash, serial port): PMU cycles, CPU "
                "cycles", "targets.board:BoardTarget",
                {**NPU_FIRMWARE_KEYS, "port": "board.port", "probe": "board.probe", "pyocd_target": "board.pyocd_target"},
                ("TFLM_ROOT", "ETHOSU_DRIVER", "UDC_BOARD_PORT", "UDC_BOARD_PROBE", "UDC_PYOCD_TARGET")),
    TargetEntry("mlperf-dut", "any device flashed with an MLPerf Tiny firmware (--port tty, socket://, unix://): "
                "latency from its timestamps as MLPerf Tiny's runner measures, accuracy from its results",
                "targets.mlperf_dut:MLPerfDutTarget",
                {key: f"mlperf_dut.{key}" for key in ("port", "baud", "chunk_bytes", "windows", "runs", "warmups",
                                                      "timeout_s")}),
)}


def target_entry(name: str) -> TargetEntry:
    if name not in TARGETS:
        raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]


def get_target(name: str, **options) -> Target:
    """The target ``name`` made with ``options`` (not checked for availability)."""
    return target_entry(name).load()(**options)


def open_target(config: dict, name: str | None = None) -> Target:
    """Target ``name`` (default: the config's run.target) with its options from the config, checked usable
    here: a target that is not is one HarnessError saying what to install."""
    name = name or config["run"]["target"]
    target = get_target(name, **target_entry(name).options(config))
    reason = target.available()
    if reason:
        raise HarnessError(f"target {target.name} is not usable here: {reason}")
    return target
