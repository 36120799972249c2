"""``qemu-an547``: the benchmark firmware on QEMU's Cortex-M55 board mps3-an547, driven over its UART.

QEMU runs with ``-icount shift=5`` so the SysTick counts instructions deterministically (DESIGN.md
section 4: DWT and PMU cycle counters read 0 under QEMU; report instructions, never cycles). The
first UART is a TCP server with nodelay; the firmware exits through semihosting with its own code.
Every QEMU started here is killed when its session closes, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness.errors import HarnessError
from targets.serial_protocol import SerialLink

BOOT_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QemuSession:
    """One QEMU process running ``elf``, with a SerialLink to its UART; a context manager."""

    def __init__(self, elf: Path, timeout_s: float = 10.0):
        if shutil.which("qemu-system-arm") is None:
            raise HarnessError("qemu-system-arm not found on PATH; install with: apt-get install qemu-system-arm")
        self.port = _free_port()
        self.process = subprocess.Popen(
            ["qemu-system-arm", "-M", "mps3-an547", "-nographic", "-monitor", "none",
             "-semihosting-config", "enable=on,target=native", "-icount", "shift=5,align=off,sleep=off",
             "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on", "-kernel", str(elf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            self.connection = self._connect()
            self.link = SerialLink.over_socket(self.connection, timeout_s, label="qemu-an547")
            self.boot_lines = self.link.wait_ready("boot")
        except BaseException:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"qemu-system-arm exited with {self.process.returncode} before its UART opened: "
                                   f"{self.process.stderr.read().decode(errors='replace').strip()[:200]}")
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"qemu-system-arm did not open its UART within {BOOT_TIMEOUT_S:g} s")

    def exit(self, code: int = 0, timeout_s: float = 10.0) -> int:
        """Ask the firmware to exit with ``code``; QEMU's exit status (the firmware's)."""
        self.connection.sendall(f"exit {code}%".encode())
        try:
            return self.process.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        if getattr(self, "connection", None) is not None:
            self.connection.close()
            self.connection = None
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
