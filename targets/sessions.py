"""Sessions: a running firmware with a ``SerialLink`` to it. ``Session`` is what every target's session is
(a context manager; ``close`` ends it, safe to call twice); ``ProcessSession`` is what the emulators'
share: a process in its own process group that dies with the harness (even a SIGKILLed one), whose
output is drained all along (so it never stalls on a full pipe), a connection to its UART opened with
retries (a Unix socket path, or a TCP port), and a close that kills the group."""

from __future__ import annotations

import collections
import socket
import subprocess
import threading
import time
from pathlib import Path

from core.errors import HarnessError
from targets.processes import dies_with_harness, kill_group
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
    anything it started, and which the kernel kills when the harness dies. Its output (``stream``:
    "stdout", with stderr merged in, or "stderr") is drained all along; ``output_tail`` keeps the last
    lines, and each line is also handed to ``on_line``."""

    def __init__(self, command: list[str], stream: str = "stderr", on_line=None):
        self.connection: socket.socket | None = None
        if stream == "stdout":
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=dies_with_harness())
            self._output = self.process.stdout
        else:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            start_new_session=True, preexec_fn=dies_with_harness())
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

    def connect(self, address: str | Path | tuple[str, int], within_s: float, name: str) -> socket.socket:
        """A connection to the emulator's UART at ``address`` (a Unix socket path, or (host, port)), retried
        until it accepts; one HarnessError line when ``within_s`` passes or the process exits first."""
        deadline = time.monotonic() + within_s
        while True:
            if self.process.poll() is not None:
                raise self.exit_error(f"before {name} opened")
            try:
                if isinstance(address, tuple):
                    return socket.create_connection(address, timeout=5.0)
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    connection.settimeout(5.0)
                    connection.connect(str(address))
                except BaseException:
                    connection.close()
                    raise
                return connection
            except OSError as error:
                if time.monotonic() > deadline:
                    raise HarnessError(f"{self.process.args[0]}: {name} did not accept a connection within "
                                       f"{within_s:g} s ({error.strerror or error})") from None
                time.sleep(0.05)

    def exit_error(self, when: str) -> HarnessError:
        """The process's exit status and last output lines as one error (it has exited)."""
        code = self.process.wait()
        self._drain.join(5)
        return HarnessError(f"{self.process.args[0]} exited with {code} {when}: "
                            f"{' / '.join(self.output_tail)[:300] or 'no output'}")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.process.poll() is None:
            kill_group(self.process)
            self.process.wait(10)
        self._drain.join(5)
        self._output.close()
