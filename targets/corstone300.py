"""``corstone300``: the benchmark firmware with the Vela-compiled model on Arm's Corstone-300 FVP with an
Ethos-U55 (``FVP_Corstone_SSE-300_Ethos-U55``), driven over UART0's telnet terminal in raw mode.

NPU figures come from the Ethos-U PMU (active, idle and total cycles, AXI read beats), counted by the
firmware around each command stream; the FVP's NPU is cycle-approximate, its CPU instruction-accurate
(one SysTick per instruction), so CPU time is reported as instructions. ``-C ethosu.num_macs`` follows
the accelerator (ethos-u55-32|64|128|256), as Vela compiles for it. Every FVP started here is killed
when its session closes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from core.errors import HarnessError
from targets import firmware
from targets.firmware import tflm_checkout
from targets.serial_link import SerialLink
from targets.serial_target import TIMED_RUNS, SerialTarget
from targets.sessions import ProcessSession
from targets.vela_compiler import VelaSettings, compile_model, vela_version

FVP = "FVP_Corstone_SSE-300_Ethos-U55"
BOOT_TIMEOUT_S = 60.0
FVP_TIMELIMIT_S = 3600  # the FVP's own wall-clock limit on a session, behind our per-reply deadlines


def fvp_command(fvp: str, elf: Path, macs: int) -> list[str]:
    """The FVP's command line: no visualisation, UART0 on a raw TCP terminal (the FVP picks the port and
    prints it), semihosting for the exit, statistics at the end, a wall-clock limit. Where each option
    comes from (Arm's and TFLM's public scripts): docs/firmware.md, "The FVP's command line"."""
    return [fvp, "-a", str(elf), "-C", f"ethosu.num_macs={macs}",
            "-C", "mps3_board.visualisation.disable-visualisation=1",
            "-C", "mps3_board.telnetterminal0.start_telnet=0", "-C", "mps3_board.telnetterminal0.mode=raw",
            "-C", "mps3_board.uart0.unbuffered_output=1", "-C", "mps3_board.uart0.shutdown_on_eot=1",
            "-C", "cpu0.semihosting-enable=1", "--stat", "--timelimit", str(FVP_TIMELIMIT_S)]


class FvpSession(ProcessSession):
    """One FVP process running ``elf``, with a SerialLink to UART0's terminal; a context manager. The FVP
    names the terminal's port on stdout, which is drained all along so it never blocks."""

    def __init__(self, fvp: str, elf: Path, macs: int, timeout_s: float = 30.0):
        port_found = threading.Event()
        self.terminal_port: int | None = None

        def on_line(line: str) -> None:
            match = re.search(r"telnetterminal0: Listening for serial connection on port (\d+)", line)
            if match and self.terminal_port is None:
                self.terminal_port = int(match.group(1))
                port_found.set()

        super().__init__(fvp_command(fvp, elf, macs), stream="stdout", on_line=on_line)
        try:
            if not self._wait_for_port(port_found) or self.terminal_port is None:
                raise HarnessError(f"{fvp} did not open UART0's terminal within {BOOT_TIMEOUT_S:g} s: "
                                   f"{' / '.join(list(self.output_tail)[-3:]) or 'no output'}")
            # the FVP bound this port itself (searching upward from start_port) and announced it: no race
            self.connection = self.connect(("127.0.0.1", self.terminal_port), BOOT_TIMEOUT_S, "UART0's terminal")
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.link = SerialLink.over_socket(self.connection, timeout_s, label="corstone300")
            self.boot_lines = self.link.wait_ready("boot", max(timeout_s, BOOT_TIMEOUT_S))
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, port_found: threading.Event) -> bool:
        """Whether the port was named before the FVP exited or the boot timeout passed."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not port_found.wait(0.1):
            if (self.process.poll() is not None and not self._drain.is_alive()) or time.monotonic() > deadline:
                return port_found.is_set()
        return True


class Corstone300Target(SerialTarget):
    """The candidate compiled by Vela for an Ethos-U55 with ``macs`` MACs, in TFLM firmware with the Ethos-U
    core driver, on the Corstone-300 FVP. Besides ``SerialTarget``'s figures: ``npu_cycles`` (PMU active
    cycles, beside Vela's estimate under the same key on the ``vela`` target), ``npu_idle_cycles``,
    ``npu_total_cycles``, ``axi0_read_beats``, ``axi1_read_beats`` and Vela's own estimate
    (``vela_npu_cycles``) for the same compiled model."""

    name = "corstone300"

    def __init__(self, accelerator: str | None = None, tflm_root: str | None = None, driver: str | None = None,
                 fvp: str | None = None, model_id: str = "ic01", baud: int = 115200, **vela_options):
        super().__init__()
        self.model_id, self.baud = model_id, baud  # the firmware's MLPerf Tiny model id and UART rate
        self.vela_settings = VelaSettings.from_options(accelerator, **vela_options)
        self.vela_options = {key: value for key, value in vela_options.items() if value is not None}
        self.accelerator, self.macs = self.vela_settings.accelerator, self.vela_settings.macs
        self.tflm_root = tflm_checkout(tflm_root)
        self._driver_option = driver
        self.fvp = fvp or os.environ.get("FVP_CORSTONE300") or FVP

    @property
    def driver(self) -> Path | None:
        return firmware.find_ethosu_driver(self.tflm_root, self._driver_option)

    def available(self) -> str | None:
        reason = firmware.missing_tools() or self.runner_missing()
        if reason:
            return reason
        reason = firmware.missing_tflm_checkout(self.tflm_root)
        if reason:
            return reason
        reason = firmware.check_ethosu_driver(self.driver)
        if reason:
            return reason
        if firmware.find_tflm_library(self.tflm_root, "cmsis_nn", "ethos_u") is None:
            return (f"TFLM in {self.tflm_root} has no Cortex-M55 library with the Ethos-U operator yet; build it once "
                    "with: python -m harness firmware setup --ethos-u")
        return None

    def runner_missing(self) -> str | None:
        """What is missing to run an image here (the FVP), or None."""
        if shutil.which(self.fvp) is None:
            return (f"{self.fvp} not found (looked at [firmware] fvp, $FVP_CORSTONE300, then PATH); install Arm's "
                    "Corstone-300 Ecosystem FVP from developer.arm.com and put its models directory on PATH")
        return None

    def settings(self) -> dict:
        return {"platform": "corstone300", "accelerator": self.accelerator, "num_macs": self.macs,
                "timed_runs": TIMED_RUNS, **self.vela_options}

    def tool_versions(self) -> dict:
        library = firmware.find_tflm_library(self.tflm_root, "cmsis_nn", "ethos_u") if self.tflm_root else None
        digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12] if library else "none"
        return {"fvp": firmware.tool_version([self.fvp, "--version"]),
                "arm_gcc": firmware.tool_version(["arm-none-eabi-gcc", "--version"]), "vela": vela_version(),
                "tflm_library": digest}

    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        compiled = compile_model(tflite, self.vela_settings, label=label)
        self._vela_npu_cycles = compiled.npu_cycles
        operators = self.firmware_operators(compiled.model, label)
        return firmware.build_model_image(workdir / "corstone300", "corstone300", compiled.model, label, arena_bytes,
                                          operators, self.tflm_root,
                                          firmware.find_tflm_library(self.tflm_root, "cmsis_nn", "ethos_u"),
                                          ethosu_driver=self.driver, model_id=self.model_id, baud=self.baud)

    def open_session(self, elf: Path) -> FvpSession:
        return FvpSession(self.fvp, elf, self.macs)

    def platform_counters(self, inference) -> dict:
        figures = inference.figures
        missing = [key for key in ("npu_active_cycles", "npu_total_cycles") if key not in figures]
        if missing:
            raise HarnessError(f"corstone300: 'infer' replied without the NPU counters ({', '.join(missing)}); "
                               "is the firmware built with the Ethos-U driver?")
        return {"npu_cycles": figures["npu_active_cycles"], "npu_idle_cycles": figures.get("npu_idle_cycles"),
                "npu_total_cycles": figures["npu_total_cycles"], "axi0_read_beats": figures.get("axi0_read_beats"),
                "axi1_read_beats": figures.get("axi1_read_beats"), "vela_npu_cycles": self._vela_npu_cycles}
