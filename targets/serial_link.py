"""The host side of the benchmark firmware's serial protocol (MLPerf Tiny's strings plus our m- counter
lines, firmware/core/benchmark.c), written once and used by every serial target over any byte link:
a TCP socket to QEMU's or the FVP's UART, or a serial port to a board.

Every fault becomes one ProtocolError line: garbled bytes, silence past the timeout, a closed link
(target exited or killed), a target that resets (m-init-done mid-command), an e-[...] reply, a
malformed reply (a size, count or result that is no number, a result outside int8, more or fewer
results than the profile announced).
"""

from __future__ import annotations

import re
import socket
import time

import numpy as np

from core.errors import HarnessError

HEX_CHUNK_BYTES = 1024  # per "db HEX%" command: 2 KB of hex, inside the firmware's 4 KB command buffer
COUNT = r"([0-9]{1,20})"  # a figure the firmware prints: a uint64 has at most 20 digits
INFERENCE_S = 5.0  # each inference an 'infer' asks for adds this much (at least) to its reply's deadline


class ProtocolError(HarnessError):
    """The target's replies broke the protocol; the message says how."""


class SerialLink:
    """Commands and replies over ``read(n) -> bytes`` (b"" when closed; raises TimeoutError on silence)
    and ``write(bytes)``; ``set_timeout(seconds)``, when given, bounds each read by the time left.

    Each reply has a deadline: ``timeout_s``, and for ``infer`` that plus an allowance per inference asked
    for (``inference_s``, raised to four times the slowest inference seen on this link), so ten timed runs
    of a slow model are not taken for a silent target."""

    def __init__(self, read, write, timeout_s: float = 10.0, label: str = "target", set_timeout=None,
                 inference_s: float = INFERENCE_S):
        self._read, self._write, self.timeout_s, self.label = read, write, timeout_s, label
        self._set_timeout, self.inference_s = set_timeout, inference_s
        self._buffer = b""

    @classmethod
    def over_socket(cls, connection: socket.socket, timeout_s: float = 10.0, label: str = "target") -> "SerialLink":
        connection.settimeout(timeout_s)
        return cls(connection.recv, connection.sendall, timeout_s, label, set_timeout=connection.settimeout)

    @classmethod
    def over_serial(cls, port, timeout_s: float = 10.0, label: str = "target") -> "SerialLink":
        """A pyserial port; its own timeout makes a silent read return b"" (turned into TimeoutError)."""
        port.timeout = timeout_s

        def read(size: int) -> bytes:
            data = port.read(max(1, port.in_waiting or 1))
            if not data:
                raise TimeoutError
            return data

        def set_timeout(seconds: float) -> None:
            port.timeout = seconds

        return cls(read, port.write, timeout_s, label, set_timeout=set_timeout)

    def read_line(self, deadline: float, during: str = "", timeout_s: float | None = None) -> str:
        silent = (f"{self.label}: no reply{f' to {during!r}' if during else ''} within "
                  f"{timeout_s or self.timeout_s:g} s (silent target)")
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(silent)
            try:
                if self._set_timeout is not None:
                    self._set_timeout(left)
                chunk = self._read(4096)
            except (TimeoutError, socket.timeout):
                raise ProtocolError(silent) from None
            except OSError as error:
                raise ProtocolError(f"{self.label}: link failed ({error.strerror or error})") from None
            if not chunk:
                raise ProtocolError(f"{self.label}: link closed mid-reply (the target exited or was killed)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.label}: garbled bytes on the link: {raw[:40]!r}") from None
        if line and not re.fullmatch(r"[me]-[\x20-\x7e]*", line):
            raise ProtocolError(f"{self.label}: garbled line on the link: {line[:60]!r}")
        return line

    def wait_ready(self, during: str = "boot", timeout_s: float | None = None) -> list[str]:
        """Lines up to m-ready, within ``timeout_s`` (default: the link's); an e-[...] line raises after the
        m-ready that follows it."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        lines, error = [], None
        while True:
            line = self.read_line(deadline, during, timeout_s)
            if not line:
                continue
            if line == "m-init-done" and during != "boot":
                raise ProtocolError(f"{self.label}: the target reset during '{during}'")
            if line.startswith("e-") and error is None:
                error = line[2:].strip("[]") or "no reason given"
            if line == "m-ready":
                break
            lines.append(line)
        if error is not None:
            raise ProtocolError(f"{self.label}: '{during}' failed on the target: {error}")
        return lines

    def command(self, text: str, timeout_s: float | None = None) -> list[str]:
        try:
            self._write(f"{text}%".encode("ascii"))
        except OSError as error:  # the target went away since its last reply
            raise ProtocolError(f"{self.label}: link failed ({error.strerror or error})") from None
        return self.wait_ready(text.split(" ")[0] if not text.startswith("db ") else "db", timeout_s)

    # -- the benchmark steps

    def profile(self) -> dict:
        lines = self.command("profile")
        figures = {}
        for line in lines:
            if re.match(r"m-(input|output|arena)-bytes-", line):
                match = re.fullmatch(r"m-(input|output|arena)-bytes-" + COUNT, line)
                if not match:
                    raise ProtocolError(f"{self.label}: 'profile' replied a malformed size line: {line[:60]!r}")
                figures[f"{match.group(1)}_bytes"] = int(match.group(2))
            elif line.startswith("m-model-"):
                match = re.fullmatch(r"m-model-\[(.*)\]", line)
                if not match:
                    raise ProtocolError(f"{self.label}: 'profile' replied a malformed model line: {line[:60]!r}")
                figures["model"] = match.group(1)
        return figures

    def load_input(self, data: bytes) -> None:
        self.command(f"db load {len(data)}")
        lines = []
        for start in range(0, len(data), HEX_CHUNK_BYTES):
            lines = self.command(f"db {data[start:start + HEX_CHUNK_BYTES].hex()}")
        if "m-load-done" not in lines:
            raise ProtocolError(f"{self.label}: the last 'db' chunk of {len(data)} bytes was not answered m-load-done")

    def infer(self, runs: int = 1, warmups: int = 0) -> dict:
        inferences = max(1, runs + warmups)
        started = time.monotonic()
        lines = self.command(f"infer {runs} {warmups}", self.timeout_s + self.inference_s * inferences)
        self.inference_s = max(self.inference_s, 4 * (time.monotonic() - started) / inferences)
        figures = {}
        for line in lines:
            # m-lap-us-N, m-instructions-N and the platform's counters (m-npu-active-cycles-N, ...)
            match = re.fullmatch(r"m-([a-z0-9-]+)-" + COUNT, line)
            if match and not match.group(1).startswith(("warmup", "infer")):
                figures[match.group(1).replace("-", "_")] = int(match.group(2))
            elif line.startswith("m-instructions-"):
                raise ProtocolError(f"{self.label}: 'infer' replied a malformed count: {line[:60]!r}")
        if "instructions" not in figures:
            raise ProtocolError(f"{self.label}: 'infer' replied without its m-instructions line")
        return figures

    def results(self) -> np.ndarray:
        for line in self.command("results"):
            if line.startswith("m-results-"):
                return self._int8_values(line)
        raise ProtocolError(f"{self.label}: 'results' replied without an m-results line")

    def _int8_values(self, line: str) -> np.ndarray:
        """The values of ``m-results-[v,v,...]``, each an integer in int8's range."""
        match = re.fullmatch(r"m-results-\[(.*)\]", line)
        if not match:
            raise ProtocolError(f"{self.label}: 'results' replied a malformed line: {line[:60]!r}")
        values = []
        for text in match.group(1).split(",") if match.group(1) else []:
            if not re.fullmatch(r"-?[0-9]+", text):
                raise ProtocolError(f"{self.label}: 'results' value {text[:20]!r} is not an integer")
            magnitude = text.lstrip("-").lstrip("0") or "0"  # int() of thousands of digits raises
            value = int(magnitude) * (-1 if text.startswith("-") else 1) if len(magnitude) <= 3 else None
            if value is None or not -128 <= value <= 127:
                raise ProtocolError(f"{self.label}: 'results' value {text[:20]} is outside int8's -128..127")
            values.append(value)
        return np.array(values, dtype=np.int8)
