"""The one narrow interface every target implements (docs/architecture.md: adding a target)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Target(ABC):
    """A place a model runs: prepare it once, run int8 inputs through it, read its counters.

    ``counters()`` returns measured or estimated figures under the store's column names
    (flash_bytes, sram_bytes, npu_cycles, total_cycles, latency_s, latency_is_estimate,
    tflm_arena_bytes, ...); anything else goes to the measurement's ``extra``.
    """

    name: str

    @abstractmethod
    def available(self) -> str | None:
        """None when the target can be used here, else the reason and what to install."""

    @abstractmethod
    def settings(self) -> dict:
        """Everything that changes a measurement on this target (part of the cache key)."""

    @abstractmethod
    def tool_versions(self) -> dict:
        """Versions of the tools this target runs (Vela, TFLM, emulator...), for provenance."""

    @abstractmethod
    def prepare(self, tflite: bytes, workdir: Path, label: str) -> None:
        """Compile/build/flash the int8 model so that ``infer`` and ``counters`` can be called."""

    @abstractmethod
    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run a batch of int8 inputs (N, ...) one inference each; return int8 outputs (N, ...)."""

    @abstractmethod
    def counters(self) -> dict:
        """Figures of the prepared model, keyed by the store's column names."""

    def close(self) -> None:
        """Release processes, ports and files; safe to call twice. Targets holding none keep this."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
