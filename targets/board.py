"""``board``: the corstone300 firmware on a real Ethos-U55 board (an MPS3 with the Corstone-300 image,
or any SSE-300 board with the same memory map): flashed with pyOCD, driven over its serial port with
pyserial. Same protocol and counters as the FVP; on silicon the SysTick counts CPU cycles, so the tick
count is stored as ``cpu_cycles`` and the timed laps give a measured ``latency_s``.
"""

from __future__ import annotations

import os
import statistics
import shutil
from pathlib import Path

from core.errors import HarnessError
from targets.corstone300 import Corstone300Target
from targets.processes import run_step
from targets.serial_link import ProtocolError, SerialLink
from targets.mlperf_models import WINDOWS
from targets.serial_target import TIMED_RUNS
from targets.sessions import Session

BAUD = 115200  # the default of [firmware] baud, which the firmware is built with
FLASH_TIMEOUT_S = 300.0


def pyocd_flash_command(elf: Path, pyocd_target: str, probe: str | None) -> list[str]:
    """pyOCD programs the ELF's load regions and resets the board, so the firmware boots right after."""
    return ["pyocd", "flash", "--target", pyocd_target, *(["--uid", probe] if probe else []), str(elf)]


class BoardSession(Session):
    """The board's serial port opened first (so no boot line is missed), then the ELF flashed; closing
    releases the port."""

    def __init__(self, elf: Path, port: str, pyocd_target: str, probe: str | None, timeout_s: float = 30.0,
                 baud: int = BAUD):
        import serial

        try:
            self.port = serial.Serial(port, baud, timeout=timeout_s)
        except serial.SerialException as error:
            raise HarnessError(f"board: cannot open serial port {port}: {error}") from None
        try:
            self.port.reset_input_buffer()
            flashed = run_step(pyocd_flash_command(elf, pyocd_target, probe), "board: pyocd flash", FLASH_TIMEOUT_S)
            if flashed.returncode:
                last = (flashed.stderr or flashed.stdout).strip().splitlines() or ["no output"]
                raise HarnessError(f"board: pyocd flash failed: {last[-1][:200]}")
            self.link = SerialLink.over_serial(self.port, timeout_s, label=f"board {port}")
            self.boot_lines = self.link.wait_ready("boot")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None


class BoardTarget(Corstone300Target):
    """``Corstone300Target``'s image on a board at ``port`` (``--port``, or $UDC_BOARD_PORT), flashed
    through the probe ``probe`` (``--probe``, or $UDC_BOARD_PROBE; the only one attached by default)."""

    name = "board"
    tick_key = "cpu_cycles"

    def __init__(self, port: str | None = None, probe: str | None = None, pyocd_target: str | None = None,
                 **options):
        super().__init__(**options)
        self.port = port or os.environ.get("UDC_BOARD_PORT")
        self.probe = probe or os.environ.get("UDC_BOARD_PROBE")
        self.pyocd_target = pyocd_target or os.environ.get("UDC_PYOCD_TARGET", "cortex_m")

    def runner_missing(self) -> str | None:
        try:
            import serial  # noqa: F401
        except ImportError:
            return "pyserial is not installed; run: pip install pyserial"
        if shutil.which("pyocd") is None:
            return "pyocd not found on PATH; run: pip install pyocd"
        if not self.port:
            return "no serial port: pass --port /dev/ttyACM0 (or set [board] port in the config, or UDC_BOARD_PORT)"
        if not Path(self.port).exists():
            return f"serial port {self.port} does not exist; is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
        return None

    def settings(self) -> dict:
        return {**super().settings(), "platform": "board", "port": self.port, "probe": self.probe,
                "pyocd_target": self.pyocd_target}

    def tool_versions(self) -> dict:
        from targets.firmware import tool_version

        versions = super().tool_versions()
        versions.pop("fvp", None)
        return {**versions, "pyocd": tool_version(["pyocd", "--version"])}

    def open_session(self, elf: Path) -> BoardSession:
        return BoardSession(elf, self.port, self.pyocd_target, self.probe, baud=int(self.baud))

    def counters(self) -> dict:
        """The figures of one timed window, then ``WINDOWS - 1`` more on the same input: the latency is the
        median window's, and every window's is kept (``latency_windows_s``), the samples 'regress' tests
        a board's latency on, as MLPerf Tiny's runner times windows."""
        figures = super().counters()
        windows = [figures["latency_s"]]
        for _ in range(WINDOWS - 1):
            _, inference = self._run(self._timed_sample(), TIMED_RUNS)
            windows.append(self.platform_counters(inference)["latency_s"])
        return {**figures, "latency_s": statistics.median(windows), "latency_windows_s": windows}

    def platform_counters(self, inference) -> dict:
        # SysTick runs at the board's CPU clock (th_ticks_per_us): the two timestamps are wall time
        if inference.elapsed_us is None:
            raise ProtocolError(f"board {self.port}: 'infer' replied without its two m-lap-us timestamps")
        return {**super().platform_counters(inference), "latency_s": inference.elapsed_us / TIMED_RUNS / 1e6}
