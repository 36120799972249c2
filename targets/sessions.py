"""Sessions: a running firmware with a ``SerialLink`` to it. ``Session`` is what every target's session is
(a context manager; ``close`` ends it, safe to call twice); ``ProcessSession`` is what the emulators'
share: a process in its own process group whose output is drained all along (so it never stalls on a
full pipe), a TCP connection to its UART opened with retries, and a close that kills the group."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import threading

from targets.serial_link import SerialLink

OUTPUT_LINES_KEPT = 20  # the process's last output lines, for error messages


class Session:
    """A running firmware with a SerialLink to it (``link``); ``close`` ends it, safe to call twice."""

    link: SerialLink

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcessSession(Session):
    """An emulator process started with ``command`` in its own process group, so ``close`` kills it and
    anything it started. Its output (``stream``: "stdout", with stderr merged in, or "stderr") is drained
    all along; ``output_tail`` keeps the last lines, and each line is also handed to ``on_line``."""

    def __init__(self, command: list[str], stream: str = "stderr", on_line=None):
        self.connection: socket.socket | None = None
        if stream == "stdout":
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            start_new_session=True)
            self._output = self.process.stdout
        else:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            start_new_session=True)
            self._output = self.process.stderr
        self.output_tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        self._on_line = on_line
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()

    def _read_output(self) -> None:
        for raw in self._output:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                self.output_tail.append(line.strip())
            if self._on_line is not None:
                self._on_line(line)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)
        self._drain.join(5)
        self._output.close()
