"""The host side of the benchmark firmware's serial protocol (MLPerf Tiny's strings plus our m- counter
lines, firmware/core/benchmark.c), written once and used by every serial target over any byte link:
a TCP socket to QEMU's or the FVP's UART, or a serial port to a board. ``SerialTarget`` is what the
serial targets share: build an image, open a session, drive the benchmark, check outputs bit-exact.

Every fault becomes one ProtocolError line: garbled bytes, silence past the timeout, a closed link
(target exited or killed), a target that resets (m-init-done mid-command), an e-[...] reply, a
malformed reply (a size, count or result that is no number, a result outside int8, more or fewer
results than the profile announced).
"""

from __future__ import annotations

import re
import socket
import time
from abc import abstractmethod
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from targets.base import Target

HEX_CHUNK_BYTES = 1024  # per "db HEX%" command: 2 KB of hex, inside the firmware's 4 KB command buffer
COUNT = r"([0-9]{1,20})"  # a figure the firmware prints: a uint64 has at most 20 digits


class ProtocolError(HarnessError):
    """The target's replies broke the protocol; the message says how."""


class SerialLink:
    """Commands and replies over ``read(n) -> bytes`` (b"" when closed; raises TimeoutError on silence)
    and ``write(bytes)``."""

    def __init__(self, read, write, timeout_s: float = 10.0, label: str = "target"):
        self._read, self._write, self.timeout_s, self.label = read, write, timeout_s, label
        self._buffer = b""

    @classmethod
    def over_socket(cls, connection: socket.socket, timeout_s: float = 10.0, label: str = "target") -> "SerialLink":
        connection.settimeout(timeout_s)
        return cls(connection.recv, connection.sendall, timeout_s, label)

    @classmethod
    def over_serial(cls, port, timeout_s: float = 10.0, label: str = "target") -> "SerialLink":
        """A pyserial port; its own timeout makes a silent read return b"" (turned into TimeoutError)."""
        port.timeout = timeout_s

        def read(size: int) -> bytes:
            data = port.read(max(1, port.in_waiting or 1))
            if not data:
                raise TimeoutError
            return data

        return cls(read, port.write, timeout_s, label)

    def read_line(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            if time.monotonic() > deadline:
                raise ProtocolError(f"{self.label}: no reply within {self.timeout_s:g} s (silent target)")
            try:
                chunk = self._read(4096)
            except (TimeoutError, socket.timeout):
                raise ProtocolError(f"{self.label}: no reply within {self.timeout_s:g} s (silent target)") from None
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

    def wait_ready(self, during: str = "boot") -> list[str]:
        """Lines up to m-ready; an e-[...] line raises after the m-ready that follows it."""
        deadline = time.monotonic() + self.timeout_s
        lines, error = [], None
        while True:
            line = self.read_line(deadline)
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

    def command(self, text: str) -> list[str]:
        try:
            self._write(f"{text}%".encode("ascii"))
        except OSError as error:  # the target went away since its last reply
            raise ProtocolError(f"{self.label}: link failed ({error.strerror or error})") from None
        return self.wait_ready(text.split(" ")[0] if not text.startswith("db ") else "db")

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
        lines = self.command(f"infer {runs} {warmups}")
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


class Session:
    """A running firmware with a SerialLink to it (``link``); ``close`` ends it, safe to call twice."""

    link: SerialLink

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TIMED_RUNS = 10
ARENA_MARGIN_BYTES = 16 * 1024  # host TFLM's arena need, plus room for the MCU build's own alignment


class SerialTarget(Target):
    """A target running the benchmark firmware: a subclass builds the image (``build_image``) and starts
    it (``open_session``); this class drives the protocol and reports the figures.

    Figures: Flash and RAM of the linked ELF (breakdown: code, rodata, data, model), the arena the
    interpreter uses, the SysTick count per inference under ``tick_key`` (instructions on emulators,
    CPU cycles on a board), the platform's counters, and whether the output equals host TFLM's on the
    same input (``bit_exact``).
    """

    tick_key = "instructions"

    def __init__(self):
        self._session: Session | None = None

    @abstractmethod
    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        """Build the firmware with ``tflite`` embedded; the ELF's path."""

    @abstractmethod
    def open_session(self, elf: Path) -> Session:
        """Start ``elf`` (boot the emulator, or flash and reset the board) and return its session."""

    def platform_counters(self, figures: dict) -> dict:
        """Store figures from the platform's m- counter lines of one timed ``infer``; none by default."""
        return {}

    def prepare(self, tflite: bytes, workdir: Path, label: str) -> None:
        from harness import firmware
        from targets.host_tflm import HostTFLM

        self.close()
        self._host = HostTFLM(tflite)
        elf = self.build_image(tflite, workdir, label, self._host.arena_bytes() + ARENA_MARGIN_BYTES)
        self._memory = firmware.memory_figures(elf)
        self._session = self.open_session(elf)
        self._profile = self._session.link.profile()

    def _run(self, sample: np.ndarray, runs: int) -> tuple[np.ndarray, dict]:
        link = self._session.link
        link.load_input(np.ascontiguousarray(sample, dtype=np.int8).tobytes())
        figures = link.infer(runs, 0)
        output = link.results()
        expected = self._profile.get("output_bytes")
        if expected is not None and output.size != expected:
            raise ProtocolError(f"{link.label}: 'results' replied {output.size} values, the profile said {expected}")
        return output, figures

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return np.stack([self._run(sample, 1)[0] for sample in np.asarray(inputs)])

    def counters(self) -> dict:
        sample = np.random.default_rng(0).integers(-128, 128, self._host.input_shape, dtype=np.int8)
        output, figures = self._run(sample, TIMED_RUNS)
        reference = self._host.infer(sample[None]).reshape(-1)
        return {"flash_bytes": self._memory["flash_bytes"], "flash_breakdown": self._memory["flash_breakdown"],
                "sram_bytes": self._memory["ram_bytes"], "tflm_arena_bytes": self._profile.get("arena_bytes"),
                self.tick_key: figures["instructions"], "latency_is_estimate": False,
                "bit_exact": bool(np.array_equal(output.reshape(-1), reference)), **self.platform_counters(figures)}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def write_model_source(directory: Path, tflite: bytes, label: str, arena_bytes: int) -> Path:
    """model_data.c (the model bytes in section .model) and model_data.h for the TFLM model side; the .c."""
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:60]
    (directory / "model_data.h").write_text(
        "#pragma once\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
        f"#define MODEL_NAME \"{name}\"\n#define MODEL_ARENA_BYTES {arena_bytes}\n"
        "extern const unsigned char model_data[];\nextern const unsigned int model_data_len;\n"
        "#ifdef __cplusplus\n}\n#endif\n")
    rows = ",\n".join(",".join(str(b) for b in tflite[i:i + 32]) for i in range(0, len(tflite), 32))
    source = directory / "model_data.c"
    source.write_text(
        "#include \"model_data.h\"\n"
        f"__attribute__((section(\".model\"), aligned(16))) const unsigned char model_data[] = {{\n{rows}\n}};\n"
        f"const unsigned int model_data_len = {len(tflite)};\n")
    return source
