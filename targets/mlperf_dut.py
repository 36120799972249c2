"""``mlperf-dut``: any device already flashed with an MLPerf Tiny firmware (a reference submission, a
vendor's, or ours), measured over its serial port as MLPerf Tiny's runner measures it
(docs/protocol.md). No model file is needed: the model is on the device (``--tflite`` may name it, for
provenance and for its input quantisation).

- Performance: ``windows`` windows (the runner's 5), each one input loaded and ``infer N W`` with the
  runner's N and W for the device's model id; a window's latency is (T1 - T0) / N from the device's two
  timestamps, the figure is the median over windows, and each window records whether it lasted
  MLPerf Tiny's 10 s.
- Accuracy: each sample loaded and run with ``infer 1 0``; its scores' argmax is the prediction.
- Inputs go in the device's format: what it announces, else its model id's (uint8 + 128 for ic01 and
  vww01, int8 for kws01, ad01 and unknown ids).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.errors import HarnessError
from targets.base import Target
from targets.benchmark_replies import ProtocolError
from targets.mlperf_models import MIN_WINDOW_S, REFERENCE_MODELS, WINDOWS, encode_input, input_format, \
    performance_settings
from targets.serial_link import REFERENCE_CHUNK_BYTES
from targets.serial_ports import open_port, port_problem

PERFORMANCE_SEED = 0  # the performance windows' input: fixed random int8 values


class MLPerfDutTarget(Target):
    name = "mlperf-dut"
    holds_model = True  # measured without a model file: the model is on the device

    def __init__(self, port: str | None = None, baud: int = 115200, chunk_bytes: int = REFERENCE_CHUNK_BYTES,
                 windows: int = WINDOWS, runs: int = 0, warmups: int = -1, timeout_s: float = 30.0):
        if not 1 <= int(chunk_bytes) <= 2000:
            raise HarnessError(f"mlperf-dut: chunk_bytes = {chunk_bytes}; a 'db' chunk carries 1 to 2000 bytes "
                               f"({REFERENCE_CHUNK_BYTES} fits the reference firmware's 80-character commands)")
        if int(windows) < 1:
            raise HarnessError(f"mlperf-dut: windows = {windows}; measure at least 1 performance window")
        if int(runs) < 0 or int(warmups) < -1:
            raise HarnessError(f"mlperf-dut: runs = {runs}, warmups = {warmups}; give counts of 0 or more (runs 0 and "
                               "warmups -1: the runner's for the device's model id)")
        self.port, self.baud, self.chunk_bytes, self.windows = port, int(baud), int(chunk_bytes), int(windows)
        self.runs, self.warmups, self.timeout_s = int(runs), int(warmups), float(timeout_s)
        self._link = self._close_port = None
        self._identity: dict | None = None

    def available(self) -> str | None:
        return port_problem(self.port)

    def settings(self) -> dict:
        """How the device is measured; not where it is plugged in (a device on another port measures alike)."""
        return {"baud": self.baud, "chunk_bytes": self.chunk_bytes, "windows": self.windows,
                "runs": self.runs, "warmups": self.warmups}

    def tool_versions(self) -> dict:
        """The device's own account of itself: its name, profile and model id."""
        identity = self.identity()
        return {"device": identity["name"], "device_profile": identity.get("profile", ""),
                "device_model": identity.get("model", "")}

    def identity(self) -> dict:
        """Connect (once) and read ``name`` and ``profile``."""
        if self._identity is None:
            self._link, self._close_port = open_port(self.port, self.baud, self.timeout_s, f"mlperf-dut {self.port}",
                                                     chunk_bytes=self.chunk_bytes)
            try:
                self._link.stale = True  # whatever the device sent before (a boot banner, a half reply) is drained
                names = [re.fullmatch(r"m-name-dut-\[(.*)\]", line) for line in self._link.command("name")]
                names = [match.group(1) for match in names if match]
                profile = self._link.profile()
            except BaseException:
                self.close()
                raise
            self._identity = {"name": names[0] if names else "unnamed", **profile}
        return self._identity

    def prepare(self, tflite: bytes | None, workdir: Path, label: str) -> None:
        identity = self.identity()
        self._format = input_format(identity.get("model"), identity.get("input_format"))
        self._input_bytes = identity.get("input_bytes")
        if tflite is not None:
            from core.tflite_model import read_tflite

            size = int(np.prod(read_tflite(tflite, label=label).input.shape))
            if self._input_bytes and self._input_bytes != size:
                raise HarnessError(f"{label}: the model takes {size} input bytes but the device's model "
                                   f"{identity.get('model')!r} takes {self._input_bytes}; is the device flashed "
                                   "with this model?")
            self._input_bytes = size
        if not self._input_bytes:
            model = REFERENCE_MODELS.get(identity.get("model", ""))
            if model is None:
                raise HarnessError(f"mlperf-dut: the device's model {identity.get('model')!r} does not say its input "
                                   "size; pass --tflite with the model it runs")
            self._input_bytes = model.input_bytes

    def _window(self, sample: np.ndarray, runs: int, warmups: int):
        self._link.load_input(encode_input(sample, self._format))
        inference = self._link.infer(runs, warmups)
        if inference.elapsed_us is None:
            raise ProtocolError(f"{self._link.label}: 'infer' replied without its two m-lap-us timestamps")
        return inference

    def counters(self) -> dict:
        identity = self.identity()
        runs, warmups = performance_settings(identity.get("model"))
        runs = self.runs or runs
        warmups = warmups if self.warmups < 0 else self.warmups
        sample = np.random.default_rng(PERFORMANCE_SEED).integers(-128, 128, self._input_bytes, dtype=np.int8)
        windows, figures = [], {}
        for _ in range(self.windows):
            inference = self._window(sample, runs, warmups)
            figures = figures or inference.figures
            seconds = inference.elapsed_us / 1e6
            windows.append({"runs": runs, "warmups": warmups, "elapsed_us": inference.elapsed_us,
                            "latency_s": seconds / runs, "meets_min_window": seconds >= MIN_WINDOW_S})
        latency = float(np.median([window["latency_s"] for window in windows]))
        return {"latency_s": latency, "latency_is_estimate": False,
                "throughput_per_s": None if latency == 0 else 1.0 / latency, "mlperf_windows": windows,
                "latency_windows_s": [window["latency_s"] for window in windows],
                "mlperf_model_id": identity.get("model"), "device_name": identity["name"],
                "windows_meet_min": all(window["meets_min_window"] for window in windows),
                **({"instructions": figures["instructions"]} if "instructions" in figures else {})}

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Each sample's scores (the device's dequantised outputs; its int8 values where it prints only
        those)."""
        outputs = []
        for sample in np.asarray(inputs):
            inference = self._window(sample, 1, 0)
            values = inference.scores if inference.scores is not None else inference.int8
            if values is None:
                raise ProtocolError(f"{self._link.label}: 'infer' replied without its m-results line")
            if outputs and values.size != outputs[0].size:
                raise ProtocolError(f"{self._link.label}: 'infer' replied {outputs[0].size} results for sample 0 "
                                    f"and {values.size} for sample {len(outputs)}")
            outputs.append(values.astype(np.float64))
        return np.stack(outputs)

    def close(self) -> None:
        if self._close_port is not None:
            self._close_port()
        self._link = self._close_port = None
        self._identity = None
