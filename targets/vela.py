"""The default target: Vela's performance estimate for an Ethos-U55 plus host TFLM for outputs.

Works on any machine with the Python packages. Flash, SRAM and weight sizes are Vela's (exact
for the compiled model); cycles and latency are Vela's estimates and are stored as such; outputs
and accuracy come from the host TFLM interpreter running the int8 model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.base import Target
from targets.host_tflm import HostTFLM, tflm_version
from targets.vela_compiler import CompiledModel, VelaSettings, compile_model, vela_version


class VelaTarget(Target):
    name = "vela"

    def __init__(self, accelerator: str | None = None, system_config: str | None = None,
                 memory_mode: str | None = None, optimise: str | None = None, host_workers: int = 0):
        self.vela_settings = VelaSettings.from_options(accelerator, system_config, memory_mode, optimise)
        self.host_workers = int(host_workers)  # processes for accuracy (0: one per core); not a setting
        self._compiled: CompiledModel | None = None
        self._host: HostTFLM | None = None

    def available(self) -> str | None:
        try:
            import ethosu.regor  # noqa: F401
            import tflite_micro  # noqa: F401
        except ImportError as exc:
            return f"{exc.name} is not installed; run: pip install ethos-u-vela tflite-micro"
        return None

    def settings(self) -> dict:
        return self.vela_settings.as_dict()

    def tool_versions(self) -> dict:
        return {"vela": vela_version(), "tflite_micro": tflm_version()}

    def prepare(self, tflite: bytes, workdir: Path, label: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._compiled = compile_model(tflite, self.vela_settings, label=label, log=workdir / "vela.log")
        (workdir / "model_vela.tflite").write_bytes(self._compiled.model)
        self._host = HostTFLM(tflite, label=label, log=workdir / "host-tflm.log", workers=self.host_workers)

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return self._host.infer(inputs)

    def counters(self) -> dict:
        compiled = self._compiled
        return {
            "flash_bytes": compiled.flash_bytes,
            "sram_bytes": compiled.sram_bytes,
            "encoded_weight_bytes": compiled.encoded_weight_bytes,
            "original_weight_bytes": compiled.original_weight_bytes,
            "npu_cycles": compiled.npu_cycles,
            "total_cycles": compiled.total_cycles,
            "latency_s": compiled.latency_s,
            "latency_is_estimate": True,
            "tflm_arena_bytes": self._host.arena_bytes(),
            "mac_count": compiled.mac_count,
            "cpu_operators": compiled.cpu_operators,
        }
