"""``qemu-an547``: the benchmark firmware on QEMU's Cortex-M55 board mps3-an547, driven over its UART.

QEMU runs with ``-icount shift=5`` so the SysTick counts instructions deterministically
(docs/papers.md, measured facts: DWT and PMU cycle counters read 0 under QEMU; report instructions, never cycles). The
first UART is a TCP server with nodelay; the firmware exits through semihosting with its own code.
Every QEMU started here is killed when its session closes, whatever happened.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from core.errors import HarnessError
from targets.firmware import tflm_checkout
from targets.model_source import write_model_source
from targets.serial_link import ProtocolError, SerialLink
from targets.serial_target import TIMED_RUNS, SerialTarget
from targets.sessions import ProcessSession

BOOT_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qemu_command(elf: Path, port: int) -> list[str]:
    """QEMU's command line: -icount makes SysTick ticks instructions; nodelay keeps round trips short."""
    return ["qemu-system-arm", "-M", "mps3-an547", "-nographic", "-monitor", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=5,align=off,sleep=off",
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on", "-kernel", str(elf)]


class QemuSession(ProcessSession):
    """One QEMU process running ``elf``, with a SerialLink to its UART; a context manager. Its stderr is
    drained all along: a firmware printing over semihosting must never fill the pipe and stall QEMU."""

    def __init__(self, elf: Path, timeout_s: float = 10.0):
        if shutil.which("qemu-system-arm") is None:
            raise HarnessError("qemu-system-arm not found on PATH; install with: apt-get install qemu-system-arm")
        self.port = _free_port()
        super().__init__(qemu_command(elf, self.port), stream="stderr")
        try:
            self.connection = self._connect()
            self.link = SerialLink.over_socket(self.connection, timeout_s, label="qemu-an547")
            try:
                self.boot_lines = self.link.wait_ready("boot")
            except ProtocolError as error:
                raise self._exit_reason("while booting") or error from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._exit_reason("before its UART opened")
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"qemu-system-arm did not open its UART within {BOOT_TIMEOUT_S:g} s")

    def _exit_reason(self, when: str) -> HarnessError | None:
        """QEMU's exit status and last stderr lines as one error, if it has exited (or does within a second)."""
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            return None
        self._drain.join(5)
        return HarnessError(f"qemu-system-arm exited with {code} {when}: "
                            f"{' / '.join(self.output_tail)[:300] or 'no output'}")

    def exit(self, code: int = 0, timeout_s: float = 10.0) -> int:
        """Ask the firmware to exit with ``code``; QEMU's exit status (the firmware's)."""
        self.connection.sendall(f"exit {code}%".encode())
        try:
            return self.process.wait(timeout_s)
        finally:
            self.close()


class QemuAn547Target(SerialTarget):
    """The candidate's int8 model in TFLM firmware on QEMU mps3-an547 (Cortex-M55, CPU only), with
    CMSIS-NN (default) or reference kernels; the figures are ``SerialTarget``'s, the SysTick count
    being instructions per inference (deterministic under -icount)."""

    name = "qemu-an547"

    def __init__(self, tflm_root: str | None = None, kernels: str = "cmsis_nn", **_vela_options):
        super().__init__()
        self.tflm_root = tflm_checkout(tflm_root)
        self.kernels = kernels

    def available(self) -> str | None:
        from targets import firmware

        reason = firmware.missing_tools()
        if reason:
            return reason
        if shutil.which("qemu-system-arm") is None:
            return "qemu-system-arm not found on PATH; install with: apt-get install qemu-system-arm"
        if shutil.which("arm-none-eabi-g++") is None:
            return "arm-none-eabi-g++ not found; install with: apt-get install libstdc++-arm-none-eabi-newlib"
        reason = firmware.missing_tflm_checkout(self.tflm_root)
        if reason:
            return reason
        if firmware.find_tflm_library(self.tflm_root, self.kernels) is None:
            return (f"TFLM in {self.tflm_root} has no Cortex-M55 library with {self.kernels} kernels yet; build it "
                    f"once with: python -m harness firmware setup --kernels {self.kernels}")
        return None

    def settings(self) -> dict:
        return {"platform": "an547", "kernels": self.kernels, "icount_shift": 5, "timed_runs": TIMED_RUNS}

    def tool_versions(self) -> dict:
        from targets.firmware import find_tflm_library, tool_version

        library = find_tflm_library(self.tflm_root, self.kernels) if self.tflm_root else None
        digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12] if library else "none"
        return {"qemu": tool_version(["qemu-system-arm", "--version"]),
                "arm_gcc": tool_version(["arm-none-eabi-gcc", "--version"]), "tflm_library": digest}

    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        from targets import firmware

        model_dir = workdir / "an547"
        data = write_model_source(model_dir, tflite, label, arena_bytes)
        return firmware.build(model_dir / "build", "an547",
                              model_source=firmware.FIRMWARE_DIR / "core" / "model_tflm.cc", tflm_root=self.tflm_root,
                              tflm_library=firmware.find_tflm_library(self.tflm_root, self.kernels), model_data=data)

    def open_session(self, elf: Path) -> QemuSession:
        return QemuSession(elf)
