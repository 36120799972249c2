"""``qemu-an547``: the benchmark firmware on QEMU's Cortex-M55 board mps3-an547, driven over its UART.

QEMU runs with ``-icount shift=5`` so the SysTick counts instructions deterministically
(docs/papers.md, measured facts: DWT and PMU cycle counters read 0 under QEMU; report instructions, never cycles). The
first UART is a Unix socket server in a private temporary folder (mode 0700: no port to race for, and no
other user can connect); QEMU waits for the harness to connect before it runs the firmware, so no boot
line is lost. The firmware exits through semihosting with its own code. Every QEMU started here is
killed when its session closes, whatever happened, and by the kernel when the harness dies.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from core.errors import HarnessError
from targets.firmware import tflm_checkout
from targets.serial_link import ProtocolError, SerialLink
from targets.serial_target import TIMED_RUNS, SerialTarget
from targets.sessions import ProcessSession

BOOT_TIMEOUT_S = 20.0
MODEL_LOADING = ("run-time", "linked")  # the model put into a firmware built once, or linked into one per model
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def qemu_command(elf: Path, uart_socket: Path, data: list[tuple[Path, int]] = ()) -> list[str]:
    """QEMU's command line: -icount makes SysTick ticks instructions; UART0 is a Unix socket server that
    holds QEMU back until the harness connects (wait=on); each (file, address) of ``data`` is put into
    memory at that address before the start (QEMU's generic loader)."""
    return ["qemu-system-arm", "-M", "mps3-an547", "-nographic", "-monitor", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=5,align=off,sleep=off",
            "-chardev", f"socket,id=uart0,path={uart_socket},server=on,wait=on", "-serial", "chardev:uart0",
            "-kernel", str(elf),
            *[word for path, address in data for word in ("-device", f"loader,file={path},addr={address:#x}")]]


def _private_folder() -> Path:
    """A fresh folder only this user can enter, with a path short enough for a Unix socket inside it."""
    base = tempfile.gettempdir()
    if len(base) > SOCKET_PATH_MAX - 30:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="udc-qemu-", dir=base))


class QemuSession(ProcessSession):
    """One QEMU process running ``elf``, with a SerialLink to its UART; a context manager. Its stderr is
    drained all along: a firmware printing over semihosting must never fill the pipe and stall QEMU."""

    def __init__(self, elf: Path, timeout_s: float = 10.0, data: list[tuple[Path, int]] = ()):
        if shutil.which("qemu-system-arm") is None:
            raise HarnessError("qemu-system-arm not found on PATH; install with: apt-get install qemu-system-arm")
        self.folder = _private_folder()
        self.uart_socket = self.folder / "uart0.sock"
        try:
            super().__init__(qemu_command(elf, self.uart_socket, data), stream="stderr")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        try:
            self.connection = self.connect(self.uart_socket, BOOT_TIMEOUT_S, "its UART")
            self.link = SerialLink.over_socket(self.connection, timeout_s, label="qemu-an547")
            try:
                self.boot_lines = self.link.wait_ready("boot", max(timeout_s, BOOT_TIMEOUT_S))
            except ProtocolError as error:
                raise self._exit_reason("while booting") or error from None
        except BaseException:
            self.close()
            raise

    def _exit_reason(self, when: str) -> HarnessError | None:
        """QEMU's exit status and last stderr lines as one error, if it has exited (or does within a second)."""
        try:
            self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_error(when)

    def exit(self, code: int = 0, timeout_s: float = 10.0) -> int:
        """Ask the firmware to exit with ``code``; QEMU's exit status (the firmware's)."""
        self.connection.sendall(f"exit {code}%".encode())
        try:
            return self.process.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)


class QemuAn547Target(SerialTarget):
    """The candidate's int8 model in TFLM firmware on QEMU mps3-an547 (Cortex-M55, CPU only), with
    CMSIS-NN (default) or reference kernels; the figures are ``SerialTarget``'s, the SysTick count
    being instructions per inference (deterministic under -icount)."""

    name = "qemu-an547"

    def __init__(self, tflm_root: str | None = None, kernels: str = "cmsis_nn", model_id: str = "ic01",
                 baud: int = 115200, model_loading: str = "run-time", **_vela_options):
        super().__init__()
        if model_loading not in MODEL_LOADING:
            raise HarnessError(f"qemu-an547: model_loading = {model_loading!r}; choose one of {', '.join(MODEL_LOADING)}")
        self.tflm_root = tflm_checkout(tflm_root)
        self.kernels, self.model_loading = kernels, model_loading
        self.model_slot: list[tuple[Path, int]] = []  # the last built model's blob and its address (run-time)
        self.model_id, self.baud = model_id, baud  # the firmware's MLPerf Tiny model id and UART rate

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
        return {"platform": "an547", "kernels": self.kernels, "icount_shift": 5, "timed_runs": TIMED_RUNS,
                "model_loading": self.model_loading}

    def tool_versions(self) -> dict:
        from targets.firmware import find_tflm_library, tool_version

        library = find_tflm_library(self.tflm_root, self.kernels) if self.tflm_root else None
        digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12] if library else "none"
        return {"qemu": tool_version(["qemu-system-arm", "--version"]),
                "arm_gcc": tool_version(["arm-none-eabi-gcc", "--version"]), "tflm_library": digest}

    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        from targets import firmware

        operators = self.firmware_operators(tflite, label)  # an operator TFLM lacks stops here, before building
        library = firmware.find_tflm_library(self.tflm_root, self.kernels)
        if self.model_loading == "linked":
            self.model_slot = []
            return firmware.build_model_image(workdir / "an547", "an547", tflite, label, arena_bytes, operators,
                                              self.tflm_root, library, model_id=self.model_id, baud=self.baud)
        from targets import runtime_image

        blob = workdir / "model_slot.bin"
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        blob.write_bytes(runtime_image.model_blob(tflite))
        self.model_slot = [(blob, runtime_image.MODEL_SLOT_ADDRESS)]
        return runtime_image.build_runtime_image("an547", operators, self.tflm_root, library, self.model_id, self.baud)

    def memory_figures(self, elf: Path, tflite: bytes, arena_bytes: int) -> dict:
        if not self.model_slot:
            return super().memory_figures(elf, tflite, arena_bytes)
        from targets import runtime_image

        return runtime_image.memory_figures(elf, len(tflite), arena_bytes)

    def open_session(self, elf: Path, images: Path | None = None) -> QemuSession:
        from targets.runtime_image import IMAGES_SLOT_ADDRESS

        self._elf = elf
        return QemuSession(elf, data=self.model_slot + ([(images, IMAGES_SLOT_ADDRESS)] if images else []))

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """With a run-time model the inputs go into the image slot at boot (as many per boot as the slot
        holds) and each is loaded with 'db slot I': no transfer per image. Otherwise over the link."""
        if not self.model_slot:
            return super().infer(inputs)
        from targets import runtime_image

        inputs = np.asarray(inputs)
        per_boot = runtime_image.images_per_slot(int(np.prod(inputs.shape[1:])))
        if per_boot == 0:
            return super().infer(inputs)
        outputs = []
        for start in range(0, len(inputs), per_boot):
            batch = inputs[start:start + per_boot]
            images = self._workdir / "images_slot.bin"
            images.write_bytes(runtime_image.images_blob(batch))
            self._session.close()
            self._session = self.open_session(self._elf, images)
            link = self._session.link
            for index in range(len(batch)):
                if "m-load-done" not in link.command(f"db slot {index}"):
                    raise ProtocolError(f"{link.label}: 'db slot {index}' was not answered m-load-done")
                outputs.append(self._output_of(link.infer(1, 0)))
        return self._stacked(outputs)
