"""``SerialTarget``: what the targets running the benchmark firmware share. A subclass builds the image
and opens a session on it; this class drives the benchmark over the session's link, reports the figures
and checks the outputs bit-exact against host TFLM."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np

from targets.base import Target
from targets.benchmark_replies import Inference, ProtocolError
from targets.mlperf_models import encode_input, input_format
from targets.sessions import Session

TIMED_RUNS = 10
ARENA_MARGIN_BYTES = 16 * 1024  # host TFLM's arena need, plus room for the MCU build's own alignment


class SerialTarget(Target):
    """A target running the benchmark firmware: a subclass builds the image (``build_image``) and starts
    it (``open_session``); this class drives the protocol and reports the figures.

    Figures: Flash and RAM of the linked ELF (breakdown: code, rodata, data, model), the arena the
    interpreter uses, the SysTick count per inference under ``tick_key`` (instructions on emulators,
    CPU cycles on a board), the platform's counters, and whether the output equals host TFLM's on the
    same input (``bit_exact``).
    """

    tick_key = "instructions"

    def __init__(self):
        self._session: Session | None = None

    @abstractmethod
    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        """Build the firmware with ``tflite`` embedded; the ELF's path."""

    @abstractmethod
    def open_session(self, elf: Path) -> Session:
        """Start ``elf`` (boot the emulator, or flash and reset the board) and return its session."""

    def memory_figures(self, elf: Path, tflite: bytes, arena_bytes: int) -> dict:
        """Flash (with its breakdown) and RAM of the image running the model: the linked ELF's by default."""
        from targets import firmware

        return firmware.memory_figures(elf)

    def platform_counters(self, inference: Inference) -> dict:
        """Store figures from the platform's m- counter lines of one timed ``infer``; none by default."""
        return {}

    def firmware_operators(self, tflite: bytes, label: str) -> list[str]:
        """The operators the firmware's op resolver registers: the model's own (one HarnessError line
        naming an operator TFLM has no kernel for)."""
        from targets.op_resolver import model_operators

        return model_operators(tflite, label)

    def prepare(self, tflite: bytes, workdir: Path, label: str) -> None:
        from targets.host_tflm import HostTFLM

        self.close()
        self.firmware_operators(tflite, label)  # an operator TFLM lacks is named before anything is built
        self._host = HostTFLM(tflite)
        arena_bytes = self._host.arena_bytes() + ARENA_MARGIN_BYTES
        elf = self.build_image(tflite, workdir, label, arena_bytes)
        self._memory = self.memory_figures(elf, tflite, arena_bytes)
        self._session = self.open_session(elf)
        self._profile = self._session.link.profile()

    def _run(self, sample: np.ndarray, runs: int) -> tuple[np.ndarray, Inference]:
        """One input (sent in the format the firmware announced) and ``runs`` timed inferences; the int8
        output and the reply."""
        link = self._session.link
        link.load_input(encode_input(sample, input_format(self._profile.get("model"), self._profile.get("input_format"))))
        inference = link.infer(runs, 0)
        return self._output_of(inference), inference

    def _output_of(self, inference: Inference) -> np.ndarray:
        """The int8 output of an 'infer' reply, checked: present, with its instruction count, of the size the
        profile announced."""
        link = self._session.link
        if inference.int8 is None:
            raise ProtocolError(f"{link.label}: 'infer' replied without its m-results-int8 line")
        if "instructions" not in inference.figures:
            raise ProtocolError(f"{link.label}: 'infer' replied without its m-instructions line")
        expected = self._profile.get("output_bytes")
        if expected is not None and inference.int8.size != expected:
            raise ProtocolError(f"{link.label}: 'infer' replied {inference.int8.size} values, the profile said "
                                f"{expected}")
        return inference.int8

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return self._stacked([self._run(sample, 1)[0] for sample in np.asarray(inputs)])

    def _stacked(self, outputs: list[np.ndarray]) -> np.ndarray:
        for index, output in enumerate(outputs):
            if output.size != outputs[0].size:
                raise ProtocolError(f"{self._session.link.label}: 'infer' replied {outputs[0].size} values for "
                                    f"sample 0 and {output.size} for sample {index}")
        return np.stack(outputs)

    def _timed_sample(self) -> np.ndarray:
        """The input the timed runs take: fixed random int8 values."""
        return np.random.default_rng(0).integers(-128, 128, self._host.input_shape, dtype=np.int8)

    def counters(self) -> dict:
        sample = self._timed_sample()
        output, inference = self._run(sample, TIMED_RUNS)
        reference = self._host.infer(sample[None]).reshape(-1)
        return {"flash_bytes": self._memory["flash_bytes"], "flash_breakdown": self._memory["flash_breakdown"],
                "sram_bytes": self._memory["ram_bytes"], "tflm_arena_bytes": self._profile.get("arena_bytes"),
                self.tick_key: inference.figures["instructions"], "latency_is_estimate": False,
                "bit_exact": bool(np.array_equal(output.reshape(-1), reference)), **self.platform_counters(inference)}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
