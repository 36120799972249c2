"""The host side of MLPerf Tiny's serial protocol (docs/protocol.md), written once and used over any
byte link: a socket to QEMU's or the FVP's UART, a serial port to a board, any MLPerf Tiny device.

A ``SerialLink`` frames lines and replies and never returns a stale reply: after any error it drains
the link and resynchronises with a ``name`` handshake before the next command. Every fault becomes one
``ProtocolError`` line: undecodable bytes, a line longer than ``MAX_LINE_BYTES``, silence past the
deadline, a closed link (target exited or killed), a failed write, a target that resets
(``m-init-done`` anywhere in a line, mid-line included), an ``e-[...]`` reply, a malformed reply.
Lines without an ``m-`` or ``e-`` prefix are the device's log: kept (``log``), never taken for a reply.
The benchmark's steps (``profile``, ``load_input``, ``infer``, ``results``, ``timestamp``) parse their
replies with ``targets.benchmark_replies``.
"""

from __future__ import annotations

import collections
import socket
import time

import numpy as np

from targets.benchmark_replies import Inference, ProtocolError, parse_inference, parse_profile, parse_results

__all__ = ["HEX_CHUNK_BYTES", "REFERENCE_CHUNK_BYTES", "ProtocolError", "SerialLink"]

HEX_CHUNK_BYTES = 1024  # per "db HEX%" to our firmware: 2 KB of hex, inside its 4 KB command buffer
REFERENCE_CHUNK_BYTES = 31  # what MLPerf Tiny's runner sends: 62 hex digits inside the reference's 80
INFERENCE_S = 5.0  # each inference an 'infer' asks for adds this much (at least) to its reply's deadline
MAX_LINE_BYTES = 64 * 1024  # a longer run of bytes without a newline is garbage, not a line
QUIET_S = 0.2  # a drained link is one that sends nothing for this long
LOG_LINES_KEPT = 200


class SerialLink:
    """Commands and replies over ``read(n) -> bytes`` (b"" when closed; raises TimeoutError on silence)
    and ``write(bytes)``; ``set_timeout(seconds)``, when given, bounds each read by the time left.

    Each reply has a deadline: ``timeout_s``, and for ``infer`` that plus an allowance per inference asked
    for (``inference_s``, raised to four times the slowest inference seen on this link), so ten timed runs
    of a slow model are not taken for a silent target. ``chunk_bytes`` is the input bytes per ``db``
    command."""

    def __init__(self, read, write, timeout_s: float = 10.0, label: str = "target", set_timeout=None,
                 inference_s: float = INFERENCE_S, chunk_bytes: int = HEX_CHUNK_BYTES):
        self._read, self._write, self.timeout_s, self.label = read, write, timeout_s, label
        self._set_timeout, self.inference_s, self.chunk_bytes = set_timeout, inference_s, chunk_bytes
        self._buffer = bytearray()
        self._start = self._scan = 0  # the unread line begins at _start; no newline before _scan
        self.log: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        self.reply_log: list[str] = []  # the log lines of the last reply
        self.stale = False  # an error left the link out of step: resynchronise before the next command
        self._resync_s = timeout_s

    @classmethod
    def over_socket(cls, connection: socket.socket, timeout_s: float = 10.0, label: str = "target",
                    **options) -> "SerialLink":
        connection.settimeout(timeout_s)
        return cls(connection.recv, connection.sendall, timeout_s, label, set_timeout=connection.settimeout,
                   **options)

    @classmethod
    def over_serial(cls, port, timeout_s: float = 10.0, label: str = "target", **options) -> "SerialLink":
        """A pyserial port; its own timeout makes a silent read return b"" (turned into TimeoutError)."""
        port.timeout = timeout_s

        def read(size: int) -> bytes:
            data = port.read(max(1, min(size, port.in_waiting or 1)))
            if not data:
                raise TimeoutError
            return data

        def set_timeout(seconds: float) -> None:
            port.timeout = seconds

        return cls(read, port.write, timeout_s, label, set_timeout=set_timeout, **options)

    def _error(self, message: str) -> ProtocolError:
        """``message`` as the error to raise; the link is out of step until resynchronised."""
        self.stale = True
        return ProtocolError(f"{self.label}: {message}")

    def _fill(self, deadline: float, silent: str) -> None:
        """Read once more into the buffer, within ``deadline``."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._error(silent)
        try:
            if self._set_timeout is not None:
                self._set_timeout(left)
            chunk = self._read(4096)
        except (TimeoutError, socket.timeout):
            raise self._error(silent) from None
        except OSError as error:
            raise self._error(f"link failed ({error.strerror or error})") from None
        if not chunk:
            raise self._error("link closed mid-reply (the target exited or was killed)")
        if self._start and self._start >= len(self._buffer) // 2:  # keep the buffer small, in linear time
            del self._buffer[:self._start]
            self._scan -= self._start
            self._start = 0
        self._buffer += chunk

    def read_line(self, deadline: float, during: str = "", timeout_s: float | None = None) -> str:
        """The next line, stripped; each byte is scanned once."""
        silent = (f"no reply{f' to {during!r}' if during else ''} within {timeout_s or self.timeout_s:g} s "
                  "(silent target)")
        while True:
            end = self._buffer.find(b"\n", self._scan)
            if end >= 0:
                break
            self._scan = len(self._buffer)
            if self._scan - self._start > MAX_LINE_BYTES:
                size = self._scan - self._start
                self._start = self._scan
                raise self._error(f"{size} bytes without a line end (garbage on the link, or a wrong baud rate)")
            self._fill(deadline, silent)
        raw = bytes(self._buffer[self._start:end])
        self._start = self._scan = end + 1
        line = raw.decode("latin-1").strip()
        if not all(" " <= char <= "~" for char in line):
            raise self._error(f"garbled bytes on the link: {line.encode('latin-1')[:40]!r}")
        return line

    def wait_ready(self, during: str = "boot", timeout_s: float | None = None) -> list[str]:
        """The ``m-`` and ``e-`` lines up to m-ready, within ``timeout_s`` (default: the link's); an e-[...]
        line raises after the m-ready that follows it. Other lines go to ``log`` and ``reply_log``."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        lines, error, self.reply_log = [], None, []
        while True:
            line = self.read_line(deadline, during, timeout_s)
            if not line:
                continue
            if "m-init-done" in line and during not in ("boot", "resync"):
                raise self._error(f"the target reset during '{during}'")
            if not line.startswith(("m-", "e-")):
                self.log.append(line)
                self.reply_log.append(line)
                continue
            if line.startswith("e-") and error is None:
                error = line[2:].strip("[]") or "no reason given"
            if line == "m-ready":
                break
            lines.append(line)
        if error is not None:
            raise self._error(f"'{during}' failed on the target: {error}")
        return lines

    def _send(self, text: str) -> None:
        try:
            self._write(f"{text}%".encode("ascii"))
        except (OSError, ValueError) as error:  # the target went away since its last reply
            raise self._error(f"link failed ({getattr(error, 'strerror', None) or error})") from None

    def command(self, text: str, timeout_s: float | None = None) -> list[str]:
        """Send ``text`` and return its reply's lines; first resynchronise when an error left the link
        out of step, so the reply is never an earlier command's."""
        if self.stale:
            self.resync()
        self._resync_s = max(self.timeout_s, timeout_s or 0.0)  # a late reply to this one may take as long
        self._send(text)
        return self.wait_ready(text.split(" ")[0] if not text.startswith("db ") else "db", timeout_s)

    def resync(self) -> None:
        """Drain what is arriving, then ``name``: lines before its ``m-name-`` line (a late reply to an
        earlier command, a reboot's banner) are thrown away, and the ``m-ready`` after it ends the
        handshake. Tried twice (a device busy with a late command may drop the first); raises when both
        fail, and the link stays out of step."""
        failure = None
        for _ in range(2):
            self._drain()
            try:
                self._send("name")
                deadline = time.monotonic() + self._resync_s
                while not self.read_line(deadline, "name", self._resync_s).startswith("m-name-"):
                    pass
                self.wait_ready("resync", max(0.1, deadline - time.monotonic()))
                self.stale = False
                return
            except ProtocolError as error:
                failure = error
        raise self._error(f"out of step and did not answer 'name' to resynchronise ({failure})")

    def _drain(self) -> None:
        """Throw away the unread bytes and what arrives until the link is quiet for ``QUIET_S``, for at most
        ``timeout_s`` (a device still sending then is left to the handshake, which skips what it sends)."""
        del self._buffer[:]
        self._start = self._scan = 0
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                if self._set_timeout is not None:
                    self._set_timeout(QUIET_S)
                if not self._read(4096):
                    raise self._error("link closed (the target exited or was killed)")
            except (TimeoutError, socket.timeout):
                return
            except OSError as error:
                raise self._error(f"link failed ({error.strerror or error})") from None

    # -- the benchmark steps

    def profile(self) -> dict:
        return parse_profile(self.command("profile"), self._error)

    def timestamp(self) -> int:
        """The device's clock in microseconds (``m-lap-us-N``)."""
        lines = self.command("timestamp")
        stamps = [line[len("m-lap-us-"):] for line in lines if line.startswith("m-lap-us-")]
        if len(stamps) != 1 or not stamps[0].isdigit() or len(stamps[0]) > 20:
            raise self._error(f"'timestamp' replied no m-lap-us-N line: {lines[:2]}")
        return int(stamps[0])

    def load_input(self, data: bytes) -> None:
        lines = self.command(f"db load {len(data)}")
        if f"m-[Expecting {len(data)} bytes]" not in lines:
            said = (self.reply_log or lines or ["nothing"])[0]
            raise self._error(f"'db load {len(data)}' was not accepted: {said[:80]!r}")
        lines = []
        for start in range(0, len(data), self.chunk_bytes):
            lines = self.command(f"db {data[start:start + self.chunk_bytes].hex()}")
        if "m-load-done" not in lines:
            raise self._error(f"the last 'db' chunk of {len(data)} bytes was not answered m-load-done")

    def infer(self, runs: int = 1, warmups: int = 0) -> Inference:
        """``infer runs warmups`` (both always sent: the reference's default is 10 warm-ups)."""
        inferences = max(1, runs + warmups)
        started = time.monotonic()
        lines = self.command(f"infer {runs} {warmups}", self.timeout_s + self.inference_s * inferences)
        self.inference_s = max(self.inference_s, 4 * (time.monotonic() - started) / inferences)
        return parse_inference(lines, self.reply_log, self._error)

    def results(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The last inference's (scores, int8 values); either may be absent (None), not both."""
        return parse_results(self.command("results"), "results", self._error)
