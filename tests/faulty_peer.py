"""Test doubles for the serial targets' fault handling (never used outside tests).

``FaultyPeer`` plays a benchmark firmware over a socket or a pty: it speaks the protocol, computes
outputs with host TFLM (so a well-behaved peer is bit-exact), and injects one scripted fault, for the
faults real firmware does not produce on demand. It keeps every input it was sent (``inputs``), so a
test can check which sample each output came from. ``PeerTarget`` is a ``SerialTarget`` whose session
is such a peer; its image is the real no-model firmware (or an over-large one, to be refused at link
time), so Flash figures still come from a linked ELF.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from pathlib import Path

import numpy as np

from targets import firmware
from targets.host_tflm import HostTFLM
from targets.serial_link import SerialLink
from targets.serial_target import SerialTarget
from targets.sessions import Session

# fault -> what the peer does on "infer" (the first seven) or "results" (the rest): "flipped" must be
# stored as not bit-exact, every other fault but "split" as one ProtocolError line
FAULTS = ("none", "split", "garbled", "silent", "killed", "reset", "error",
          "flipped", "results-overflow", "results-nonint", "results-short")



def received_commands(read):
    """Each '%'-terminated command a peer receives, decoded, until ``read(size)`` returns b"" or raises
    OSError (the host hung up)."""
    buffer = b""
    while True:
        try:
            chunk = read(4096)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while b"%" in buffer:
            command, buffer = buffer.split(b"%", 1)
            yield command.decode()

class FaultyPeer(threading.Thread):
    """Test double of a device running the benchmark firmware, injecting ``fault`` (one of FAULTS)."""

    def __init__(self, tflite: bytes, fault: str = "none", transport: str = "socket"):
        super().__init__(daemon=True)
        self.model, self.fault = HostTFLM(tflite), fault
        self.input = b""
        self.inputs: list[bytes] = []  # the input of every "infer", in order
        self.output: np.ndarray | None = None
        self.output_bytes = self.model.infer(np.zeros((1, *self.model.input_shape), np.int8)).size
        if transport == "socket":
            self.host_end, device = socket.socketpair()
            self._read, self._write, self._close = device.recv, device.sendall, device.close
        else:  # a pty: the host side opens the slave as a serial port, as a board's /dev/ttyACM0
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing: bytes pass as on a UART
            self.port_name = os.ttyname(slave)
            self._slave = slave  # held open so the line stays up until the peer closes
            self._read = lambda size: os.read(master, size)
            self._write = lambda data: os.write(master, data)
            self._close = lambda: (os.close(master), os.close(slave))
        self.start()

    def _send(self, text: str) -> None:
        data = text.encode("latin-1")
        if self.fault == "split":  # every line arrives in 3-byte pieces, each its own read
            for start in range(0, len(data), 3):
                self._write(data[start:start + 3])
                time.sleep(0.001)
        else:
            self._write(data)

    def boot(self) -> None:
        """Print the boot lines, as a board does after the host opened its port and reset it."""
        self._send("m-timestamp-mode-performance\r\nm-lap-us-0\r\nm-init-done\r\nm-ready\r\n")

    def run(self) -> None:
        try:
            for command in received_commands(self._read):
                if not self._answer(command):
                    self._close()
                    return
        except OSError:
            return

    def _answer(self, command: str) -> bool:
        """Reply to one command; False when the peer hangs up."""
        if command == "profile":
            shape = self.model.input_shape
            self._send(f"m-model-[peer]\r\nm-input-format-[int8]\r\nm-input-bytes-{int(np.prod(shape))}\r\n"
                       f"m-output-bytes-{self.output_bytes}\r\nm-arena-bytes-4096\r\n")
        elif command.startswith("db load "):
            self.expected, self.input = int(command[8:]), b""
            self._send(f"m-[Expecting {self.expected} bytes]\r\n")
        elif command.startswith("db "):
            self.input += bytes.fromhex(command[3:])
            if len(self.input) == self.expected:
                self._send("m-load-done\r\n")
        elif command.startswith("infer "):
            self._send("m-warmup-start-0\r\nm-warmup-done\r\nm-infer-start-10\r\n")
            if self.fault == "silent":
                return True
            if self.fault == "killed":
                return False
            if self.fault == "reset":
                self._send("m-init-done\r\nm-ready\r\n")
                return True
            if self.fault == "garbled":
                self._send("m-lap-\xff\xfe\x00us\r\n")
            if self.fault == "error":
                self._send("e-[Invoke failed]\r\nm-ready\r\n")
                return True
            self.inputs.append(self.input)
            sample = np.frombuffer(self.input, np.int8).reshape(self.model.input_shape)
            self.output = self.model.infer(sample[None]).reshape(-1)
            self._send("m-lap-us-1000\r\nm-lap-us-11000\r\nm-instructions-32000\r\nm-infer-done\r\n")
            self._send(self._results_lines())
        elif command == "results":
            self._send(self._results_lines())
        self._send("m-ready\r\n")
        return True

    def _results_lines(self) -> str:
        values = self._result_values()
        scores = ",".join("0.000" if not v.lstrip("-").isdigit() else f"{int(v) / 10:0.3f}" for v in values)
        return f"m-results-[{scores}]\r\nm-results-int8-[{','.join(values)}]\r\n"

    def _result_values(self) -> list[str]:
        values = [str(int(v)) for v in self.output]
        if self.fault == "flipped":  # one output byte's bits inverted: a well-formed but wrong reply
            values[3] = str(~int(self.output[3]))
        elif self.fault == "results-overflow":
            values[1] = "200"
        elif self.fault == "results-nonint":
            values[2] = "2.5"
        elif self.fault == "results-short":
            values.pop()
        return values


class PeerSession(Session):
    def __init__(self, peer: FaultyPeer, timeout_s: float):
        self.peer, self.closed = peer, False
        if hasattr(peer, "port_name"):
            import serial

            self.port = serial.Serial(peer.port_name, 115200)
            self.link = SerialLink.over_serial(self.port, timeout_s, label="peer")
        else:
            self.port = peer.host_end
            self.link = SerialLink.over_socket(peer.host_end, timeout_s, label="peer")
        self.link.inference_s = 0.1  # the peer answers at once: a silent one is told within 1 s + 0.1 s a run
        peer.boot()
        self.boot_lines = self.link.wait_ready("boot")

    def close(self) -> None:
        self.port.close()
        self.closed = True


class PeerTarget(SerialTarget):
    """Test double of a serial target: each candidate's fault is looked up by its label in ``faults``
    ("too-big" makes the image too large for its memory region, refused at link time)."""

    name = "peer"

    def __init__(self, faults: dict[str, str], build_dir: Path, transport: str = "socket", timeout_s: float = 1.0):
        super().__init__()
        self.faults, self.build_dir, self.transport, self.timeout_s = faults, build_dir, transport, timeout_s
        self.sessions: list[PeerSession] = []

    def available(self) -> str | None:
        return None

    def settings(self) -> dict:
        return {"transport": self.transport}

    def tool_versions(self) -> dict:
        return {}

    def build_image(self, tflite: bytes, workdir: Path, label: str, arena_bytes: int) -> Path:
        self._tflite, self._fault = tflite, self.faults.get(label, "none")
        if self._fault != "too-big":
            return firmware.build(self.build_dir / "none")
        model = workdir / "model_huge.c"  # a 20 MB "model" for the 16 MB DDR region
        workdir.mkdir(parents=True, exist_ok=True)
        model.write_text((firmware.FIRMWARE_DIR / "core" / "model_none.c").read_text()
                         + '__attribute__((section(".model"), used)) static const unsigned char model_data[20 << 20] '
                           '= {1};\n')
        return firmware.build(workdir / "build", model_source=model)

    def open_session(self, elf: Path) -> PeerSession:
        self.sessions.append(PeerSession(FaultyPeer(self._tflite, self._fault, self.transport), self.timeout_s))
        return self.sessions[-1]
