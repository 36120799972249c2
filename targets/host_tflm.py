"""The host TFLM interpreter (tflite-micro wheel): the reference output of an int8 model.

It runs the same kernels as firmware TFLM, so any serial target can be checked bit-exact
against it. It cannot run a Vela-compiled model (custom op ethos-u), so it always takes the
int8 model before Vela.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

ARENA_BYTES = 4 * 1024 * 1024  # generous: the host has room, the real need is read back below


class HostTFLM:
    def __init__(self, tflite: bytes):
        from tflite_micro import runtime

        self._interpreter = runtime.Interpreter.from_bytes(tflite, arena_size=ARENA_BYTES)
        details = self._interpreter.get_input_details(0)
        self.input_shape = tuple(int(d) for d in details["shape"])
        self.input_dtype = details["dtype"]

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        outputs = []
        for sample in np.asarray(inputs):
            # TFLM may reuse the input buffer as scratch: set the input before every invoke.
            self._interpreter.set_input(sample.reshape(self.input_shape).astype(self.input_dtype), 0)
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_output(0).copy())
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.int8)

    def arena_bytes(self) -> int:
        """Arena actually used; TFLM prints it only to stderr, so fd 2 is captured around the call."""
        with tempfile.TemporaryFile() as capture:
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
            try:
                self._interpreter.print_allocations()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
        match = re.search(r"Arena allocation total (\d+) bytes", text)
        return int(match.group(1)) if match else 0


def tflm_version() -> str:
    from importlib.metadata import version

    return version("tflite-micro")
