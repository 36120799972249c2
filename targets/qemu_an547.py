"""``qemu-an547``: the benchmark firmware on QEMU's Cortex-M55 board mps3-an547, driven over its UART.

QEMU runs with ``-icount shift=5`` so the SysTick counts instructions deterministically (DESIGN.md
section 4: DWT and PMU cycle counters read 0 under QEMU; report instructions, never cycles). The
first UART is a TCP server with nodelay; the firmware exits through semihosting with its own code.
Every QEMU started here is killed when its session closes, whatever happened.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from targets.base import Target
from targets.host_tflm import HostTFLM
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


TIMED_RUNS = 10
ARENA_MARGIN_BYTES = 16 * 1024  # host TFLM's arena need, plus room for the MCU build's own alignment


class QemuAn547Target(Target):
    """The candidate's int8 model in TFLM firmware on QEMU mps3-an547 (Cortex-M55, CPU only), with
    CMSIS-NN (default) or reference kernels.

    Figures: Flash and RAM from the linked ELF (breakdown: code, rodata, data, model), the arena the
    interpreter uses, instructions per inference (SysTick under -icount, median of 10 timed runs), and
    whether the output equals host TFLM's on the same input (bit_exact). Accuracy comes from outputs
    computed on the emulated device.
    """

    name = "qemu-an547"

    def __init__(self, tflm_root: str | None = None, kernels: str = "cmsis_nn", **_vela_options):
        root = tflm_root or os.environ.get("TFLM_ROOT", "")
        self.tflm_root = Path(root).expanduser() if root else None
        self.kernels = kernels
        self._session: QemuSession | None = None

    def available(self) -> str | None:
        from harness import firmware

        reason = firmware.missing_tools()
        if reason:
            return reason
        if shutil.which("qemu-system-arm") is None:
            return "qemu-system-arm not found on PATH; install with: apt-get install qemu-system-arm"
        if shutil.which("arm-none-eabi-g++") is None:
            return "arm-none-eabi-g++ not found; install with: apt-get install libstdc++-arm-none-eabi-newlib"
        if self.tflm_root is None or not (self.tflm_root / "tensorflow" / "lite" / "micro").is_dir():
            return ("no TFLM checkout: set TFLM_ROOT to a tflite-micro checkout with its downloads/ populated "
                    "(README: 'TFLM for the firmware targets')")
        if firmware.find_tflm_library(self.tflm_root, self.kernels) is None:
            return (f"TFLM in {self.tflm_root} has no Cortex-M55 library with {self.kernels} kernels yet; build it "
                    f"once with: python -m harness firmware setup --kernels {self.kernels}")
        return None

    def settings(self) -> dict:
        return {"platform": "an547", "kernels": self.kernels, "icount_shift": 5, "timed_runs": TIMED_RUNS}

    def tool_versions(self) -> dict:
        def version(command: list[str]) -> str:
            output = subprocess.run(command, capture_output=True, text=True).stdout.splitlines()
            return output[0].strip() if output else "unknown"

        from harness.firmware import find_tflm_library

        library = find_tflm_library(self.tflm_root, self.kernels) if self.tflm_root else None
        digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12] if library else "none"
        return {"qemu": version(["qemu-system-arm", "--version"]), "arm_gcc": version(["arm-none-eabi-gcc", "--version"]),
                "tflm_library": digest}

    def prepare(self, tflite: bytes, workdir: Path, label: str) -> None:
        from harness import firmware

        self.close()
        self._host = HostTFLM(tflite)
        model_dir = workdir / "an547"
        model_dir.mkdir(parents=True, exist_ok=True)
        _write_model_source(model_dir, tflite, label, self._host.arena_bytes() + ARENA_MARGIN_BYTES)
        elf = firmware.build(model_dir / "build", "an547", model_source=firmware.FIRMWARE_DIR / "core" / "model_tflm.cc",
                             tflm_root=self.tflm_root,
                             tflm_library=firmware.find_tflm_library(self.tflm_root, self.kernels),
                             model_data=model_dir / "model_data.c")
        self._memory = firmware.memory_figures(elf)
        self._session = QemuSession(elf)
        self._profile = self._session.link.profile()

    def _run(self, sample: np.ndarray, runs: int) -> tuple[np.ndarray, int]:
        link = self._session.link
        link.load_input(np.ascontiguousarray(sample, dtype=np.int8).tobytes())
        figures = link.infer(runs, 0)
        return link.results(), figures["instructions"]

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return np.stack([self._run(sample, 1)[0] for sample in np.asarray(inputs)])

    def counters(self) -> dict:
        sample = np.random.default_rng(0).integers(-128, 128, self._host.input_shape, dtype=np.int8)
        output, instructions = self._run(sample, TIMED_RUNS)
        reference = self._host.infer(sample[None]).reshape(-1)
        return {"flash_bytes": self._memory["flash_bytes"], "flash_breakdown": self._memory["flash_breakdown"],
                "sram_bytes": self._memory["ram_bytes"], "tflm_arena_bytes": self._profile.get("arena_bytes"),
                "instructions": instructions, "latency_is_estimate": False,
                "bit_exact": bool(np.array_equal(output.reshape(-1), reference))}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _write_model_source(directory: Path, tflite: bytes, label: str, arena_bytes: int) -> None:
    """model_data.c (the model bytes in section .model) and model_data.h for the TFLM model side."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:60]
    (directory / "model_data.h").write_text(
        "#pragma once\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
        f"#define MODEL_NAME \"{name}\"\n#define MODEL_ARENA_BYTES {arena_bytes}\n"
        "extern const unsigned char model_data[];\nextern const unsigned int model_data_len;\n"
        "#ifdef __cplusplus\n}\n#endif\n")
    rows = ",\n".join(",".join(str(b) for b in tflite[i:i + 32]) for i in range(0, len(tflite), 32))
    (directory / "model_data.c").write_text(
        "#include \"model_data.h\"\n"
        f"__attribute__((section(\".model\"), aligned(16))) const unsigned char model_data[] = {{\n{rows}\n}};\n"
        f"const unsigned int model_data_len = {len(tflite)};\n")
