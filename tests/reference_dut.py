"""Test double of a device flashed with MLPerf Tiny's reference firmware (never used outside tests): no
such board is attached to the machines the tests run on, so this thread plays one, byte for byte as
the reference API (``benchmark/api/internally_implemented.cpp``) and the reference submissions'
``submitter_implemented.cpp`` behave:

- an 80-character command buffer that silently keeps overwriting its last character past 80;
- ``strtok`` words; the ``m-name-dut-[unspecified]``, ``m-profile-[...]``/``m-model-[ID]`` replies;
- ``db load`` (``Supplied buffer size ...`` as an unprefixed log line past the maximum), ``db HEX``
  (odd digit counts and bad digits as the reference's errors, the digits after the last byte ignored),
  ``db print``;
- ``infer [N [W]]`` (defaults 1 and 10), ``Input db has ...`` as a log line when the input is short (and
  the stale input run anyway), two ``m-lap-us`` timestamps around the timed loop, then the results;
- results dequantised: ``%0.3f`` (ic01, vww01) or keyword spotting's ``0.%d%d%d`` (kws01);
- ic01 and vww01 take uint8 and subtract 128.

Outputs come from host TFLM on the model, so accuracy is real. Time is virtual: each inference moves
the microsecond clock by ``inference_us`` (with ``jitter`` and ``window_jitter``, relative normal noise
per inference and per command, as a real clock and cache would), so latencies are known; ``clock_start_us`` near 2**32 makes the 32-bit clock wrap.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import tty

import numpy as np

from core.tflite_model import read_tflite
from targets.host_tflm import HostTFLM

COMMAND_SIZE = 80  # EE_CMD_SIZE
MAX_DB_INPUT_SIZE = 96 * 96 * 3
SHIFTED = ("ic01", "vww01")


class ReferenceDut(threading.Thread):
    """A reference-firmware device for ``tflite`` announcing ``model_id``, on TCP (``url``: socket://...)
    or a pty (``url``: its tty path)."""

    def __init__(self, tflite: bytes, model_id: str = "ic01", transport: str = "socket", inference_us: int = 1500,
                 clock_start_us: int = 1000, jitter: float = 0.0, window_jitter: float = 0.0, seed: int = 0):
        super().__init__(daemon=True)
        self.model, self.model_id, self.inference_us = HostTFLM(tflite), model_id, inference_us
        # relative normal noise (sd) on each inference's time, and on all of one 'infer' command's (a clock or
        # cache state that shifts between windows)
        self.jitter, self.window_jitter, self.rng = jitter, window_jitter, np.random.default_rng(seed)
        output = read_tflite(tflite).output
        self.scale, self.zero_point = float(output.scales[0]), int(output.zero_points[0])
        self.input_size = int(np.prod(self.model.input_shape))
        self.clock_us, self.buffer, self.buffer_size, self.buffer_pos = clock_start_us, bytearray(MAX_DB_INPUT_SIZE), 0, 0
        self.output: np.ndarray | None = None
        self.commands: list[str] = []  # every command as the device's buffer held it
        self.inputs: list[bytes] = []  # the int8 input of every inference run
        if transport == "socket":
            self._server = socket.create_server(("127.0.0.1", 0))
            self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        else:
            master, slave = os.openpty()
            tty.setraw(slave)
            self.url, self._slave, self._master = os.ttyname(slave), slave, master
            self._server = None
        self.start()

    # -- transport

    def run(self) -> None:
        if self._server is not None:
            connection, _ = self._server.accept()
            self._server.close()
            self._read, self._write = connection.recv, connection.sendall
        else:
            self._read = lambda size: os.read(self._master, size)
            self._write = lambda data: os.write(self._master, data)
        self.printf("m-timestamp-mode-performance\r\n")
        self.timestamp()
        self.printf("m-init-done\r\nm-ready\r\n")
        command, position = bytearray(COMMAND_SIZE + 1), 0
        while True:
            try:
                data = self._read(4096)
            except OSError:
                return
            if not data:
                return
            for byte in data:  # ee_serial_callback
                if byte == ord("%"):
                    self.parse(command[:position].decode("latin-1"))
                    position = 0
                else:
                    command[position] = byte
                    position = min(position + 1, COMMAND_SIZE)

    def printf(self, text: str) -> None:
        try:
            self._write(text.encode("latin-1"))
        except OSError:
            pass

    # -- the reference parser

    def timestamp(self) -> None:
        self.printf(f"m-lap-us-{self.clock_us % (1 << 32)}\r\n")

    def parse(self, text: str) -> None:
        self.commands.append(text)
        words = text.split(" ")
        words = [word for word in words if word] or [""]
        head = words[0]
        if head == "name":
            self.printf("m-name-dut-[unspecified]\r\n")
        elif head == "timestamp":
            self.timestamp()
        elif head == "profile":
            self.printf(f"m-profile-[ULPMark for tinyML Firmware V0.0.1]\r\nm-model-[{self.model_id}]\r\n")
        elif head == "help":
            self.printf("ULPMark for tinyML Firmware V0.0.1\r\n\r\nhelp         : Print this information\r\n")
        elif head == "db":
            self.db(words[1:])
        elif head == "infer":
            self.infer(words[1:])
        elif head == "results":
            self.results()
        else:
            self.printf(f"e-[Unknown command: {head}]\r\n")
        self.printf("m-ready\r\n")

    def db(self, words: list[str]) -> None:
        if not words:
            self.printf("e-[Command 'db' requires a subcommand]\r\n")
        elif words[0] == "load":
            size = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            if size == 0:
                self.printf("e-[Command 'db load' must be >0 bytes]\r\n")
                return
            self.buffer_size, self.buffer_pos = size, 0
            if size > MAX_DB_INPUT_SIZE:
                self.printf(f"Supplied buffer size {size} exceeds maximum of {MAX_DB_INPUT_SIZE}\n")
            else:
                self.printf(f"m-[Expecting {size} bytes]\r\n")
        elif words[0] == "print":
            for start in range(0, self.buffer_size, 8):
                chunk = self.buffer[start:min(start + 8, self.buffer_size)]
                self.printf("m-buffer-" + "-".join(f"{b:02x}" for b in chunk) + "\r\n")
        else:
            digits = words[0][:COMMAND_SIZE]
            if len(digits) % 2:
                self.printf("e-[Insufficent number of hex digits]\r\n")
                return
            for i in range(0, len(digits), 2):
                try:
                    value = int(digits[i:i + 2], 16)
                except ValueError:
                    self.printf(f"e-[Invalid hex digit '{digits[i:i + 2]}']\r\n")
                    return
                self.buffer[self.buffer_pos] = value
                self.buffer_pos += 1
                if self.buffer_pos == self.buffer_size:
                    self.printf("m-load-done\r\n")
                    return

    def infer(self, words: list[str]) -> None:
        runs, warmups = 1, 10
        if words:
            runs = int(words[0]) if words[0].lstrip("-").isdigit() else 0
            if runs <= 0:
                self.printf("e-[Inference iterations must be >0]\r\n")
                return
            if len(words) > 1:
                warmups = int(words[1]) if words[1].lstrip("-").isdigit() else 0
                if warmups < 0:
                    self.printf("e-[Inference warmup must be >=0]\r\n")
                    return
        taken = min(self.input_size, self.buffer_pos)  # ee_get_buffer: at most the model's input
        if taken != self.input_size:  # th_load_tensor: says so, and the old input is run
            self.printf(f"Input db has {taken} elemented, expected {self.input_size}\n")
        else:
            raw = np.frombuffer(bytes(self.buffer[:self.input_size]), np.uint8)
            self.tensor = (raw ^ 0x80 if self.model_id in SHIFTED else raw).view(np.int8)
        tensor = getattr(self, "tensor", np.zeros(self.input_size, np.int8))
        self.inputs.append(tensor.tobytes())
        self.printf(f"m-warmup-start-{warmups}\r\n")
        self.clock_us += self.elapsed_us(warmups)
        self.printf(f"m-warmup-done\r\nm-infer-start-{runs}\r\n")
        self.timestamp()
        self.output = self.model.infer(tensor.reshape(self.model.input_shape)[None]).reshape(-1)
        self.clock_us += self.elapsed_us(runs)
        self.timestamp()
        self.printf("m-infer-done\r\n")
        self.results()

    def elapsed_us(self, inferences: int) -> int:
        """Microseconds ``inferences`` take: ``inference_us`` each, with the relative ``jitter`` as noise."""
        scale = 1 + self.window_jitter * self.rng.standard_normal()
        times = self.inference_us * scale * (1 + self.jitter * self.rng.standard_normal(inferences))
        return int(round(float(np.clip(times, 1, None).sum()))) if inferences else 0

    def scores(self) -> np.ndarray:
        return self.scale * (self.output.astype(np.float64) - self.zero_point)

    def results(self) -> None:
        if self.output is None:
            self.output = np.zeros(1, np.int8)
        if self.model_id == "kws01":  # "0.%d" "%d" "%d" of the int() of 10x, 100x, 1000x
            texts = [f"0.{int(v * 10)}{int(math.fmod(int(v * 100), 10))}{int(math.fmod(int(v * 1000), 10))}"
                     for v in self.scores()]
        else:
            texts = [f"{v:0.3f}" for v in self.scores()]
        self.printf("m-results-[" + ",".join(texts) + "]\r\n")

    def close(self) -> None:
        if self._server is None:
            for descriptor in (self._master, self._slave):
                try:
                    os.close(descriptor)
                except OSError:
                    pass
