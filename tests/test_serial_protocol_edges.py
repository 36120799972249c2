"""Edges of the serial protocol's host side: the generated model source as a C compiler reads it, a
link's defaults, a pyserial port on a real pseudo-terminal, the exact wording of each fault line, and
what ``SerialTarget`` sends and reports. Misbehaving targets are test doubles (``PtyPeer``, threads
answering with scripted bytes, and ``RecordingPeer``), for the faults real firmware does not produce
on demand; sockets, pseudo-terminals, compilers and the peers' firmware image are real."""

from __future__ import annotations

import os
import shutil
import socket
import string
import struct
import subprocess
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from targets import firmware
from targets.host_tflm import HostTFLM
from targets.model_source import write_model_source
from targets.serial_link import ProtocolError, SerialLink
from targets.serial_target import TIMED_RUNS
from tests.faulty_peer import FaultyPeer, PeerSession, PeerTarget, received_commands

# --- write_model_source, compiled --------------------------------------------------------------------

SAFE = set(string.ascii_letters + string.digits + "_.-")


def _expected_name(label: str) -> str:
    """The label as the firmware's MODEL_NAME: every character but letters, digits, _ . - as one '_',
    at most 60 characters."""
    return "".join(c if c in SAFE else "_" for c in label)[:60]


# bytes 0..255 each at least once, in a scrambled order, and a length that leaves a partial last row
MODEL_BYTES = bytes(np.random.default_rng(3).permutation(np.tile(np.arange(256, dtype=np.uint8), 3))) + b"\x00\xff\x80"
LABEL = 'Hand "b4" s50\\q/é:' + "AbZz09_.-" * 6 + "tail"  # quotes, a backslash, non-ASCII; longer than 60
MAIN = r"""
#include <stdio.h>
#include "model_data.h"
int main(void) {
    printf("%s\n%ld\n%u\n", MODEL_NAME, (long)MODEL_ARENA_BYTES, model_data_len);
    fwrite(model_data, 1, model_data_len, stdout);
    return 0;
}
"""


def _run_compiled(directory: Path, source: Path) -> tuple[str, int, int, bytes]:
    """Compile ``source`` as C and a C++ program that includes model_data.h, link and run them: the
    program's view of (MODEL_NAME, MODEL_ARENA_BYTES, model_data_len, model_data)."""
    main = directory / "main.cc"
    main.write_text(MAIN)
    flags = ["-Wall", "-Werror", "-I", str(directory)]
    subprocess.run(["cc", "-std=c11", *flags, "-c", str(source), "-o", str(directory / "model_data.o")], check=True,
                   capture_output=True)
    subprocess.run(["c++", *flags, str(main), str(directory / "model_data.o"), "-o", str(directory / "program")],
                   check=True, capture_output=True)
    output = subprocess.run([str(directory / "program")], check=True, capture_output=True).stdout
    name, arena, length, data = output.split(b"\n", 3)
    return name.decode(), int(arena), int(length), data


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("c++") is None, reason="no host C/C++ compiler")
def test_model_source_compiles_to_the_model_bytes_name_and_arena(tmp_path):
    """model_data.c/.h, written into a directory whose parents do not exist yet and then rewritten in
    place, compile as C (and the header from C++) into exactly the model's bytes, its length, the
    label made C-safe and cut to 60 characters, and the arena size."""
    directory = tmp_path / "a" / "b" / "model"
    write_model_source(directory, b"\x01\x02", "first", 1)
    source = write_model_source(directory, MODEL_BYTES, LABEL, 123456)
    assert source == directory / "model_data.c"
    assert sorted(path.name for path in directory.iterdir()) == ["model_data.c", "model_data.h"]
    name, arena, length, data = _run_compiled(directory, source)
    assert name == _expected_name(LABEL)
    assert len(name) == 60 and name.startswith("Hand__b4__s50_q___AbZz09_.-")
    assert arena == 123456
    assert length == len(MODEL_BYTES) == 771
    assert data == MODEL_BYTES


@pytest.mark.skipif(bool(firmware.missing_tools()), reason=f"{firmware.missing_tools()}")
def test_model_source_puts_the_bytes_in_the_model_section_for_the_firmware_compiler(tmp_path):
    """The firmware's compiler places model_data, and nothing else, in section .model: its size is
    the model's."""
    source = write_model_source(tmp_path, MODEL_BYTES, "m", 4096)
    obj = tmp_path / "model_data.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m55", "-O2", "-Wall", "-Werror", "-I", str(tmp_path), "-c",
                    str(source), "-o", str(obj)], check=True, capture_output=True)
    assert firmware.section_sizes(obj)[".model"] == len(MODEL_BYTES)


# --- a link's defaults and messages ------------------------------------------------------------------


def test_a_link_made_without_settings_reports_a_10_s_timeout_as_target():
    """SerialLink's defaults: label "target", timeout 10 s (as named when the link goes silent)."""
    host, device = socket.socketpair()
    host.settimeout(0.2)  # the socket itself gives up early; the link reports its own setting
    try:
        link = SerialLink(host.recv, host.sendall)
        with pytest.raises(ProtocolError, match=r"^target: no reply to 'name' within 10 s \(silent target\)$"):
            link.command("name")
        assert device.recv(64) == b"name%"
    finally:
        host.close()
        device.close()


def test_a_socket_link_defaults_to_10_s_and_the_label_target():
    host, device = socket.socketpair()
    try:
        link = SerialLink.over_socket(host)
        assert host.gettimeout() == 10.0
        device.sendall(b"m-name-x\r\n")
        device.close()
        with pytest.raises(ProtocolError, match=r"^target: link closed mid-reply"):
            link.wait_ready("boot")
    finally:
        host.close()


def test_a_command_to_a_target_gone_since_its_last_reply_is_a_link_failure():
    """The far end closed between two commands: writing the next one fails, in one ProtocolError line."""
    host, device = socket.socketpair()
    device.sendall(b"m-ready\r\n")
    try:
        link = SerialLink.over_socket(host, 1.0, label="gone")
        assert link.wait_ready("boot") == []
        device.close()
        with pytest.raises(ProtocolError, match=r"^gone: link failed \(Broken pipe\)$"):
            link.command("name")
    finally:
        host.close()


def test_a_reset_connection_is_a_link_failure_naming_the_reason():
    """A TCP peer that aborts (RST) makes the read fail: the line names the OS's reason, not its errno."""
    server = socket.create_server(("127.0.0.1", 0))
    host = socket.create_connection(server.getsockname())
    device, _ = server.accept()
    server.close()
    device.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    device.close()  # linger 0: the connection is reset
    try:
        link = SerialLink.over_socket(host, 2.0, label="tcp")
        with pytest.raises(ProtocolError, match=r"^tcp: link failed \(Connection reset by peer\)$"):
            link.wait_ready("boot")
    finally:
        host.close()


def test_a_target_that_babbles_without_ending_a_line_times_out():
    """Bytes keep coming but no newline: past the timeout that is a silent target, though no read timed out."""
    host, device = socket.socketpair()
    stop = threading.Event()

    def babble():
        while not stop.is_set():
            try:
                device.sendall(b"m-xx")
            except OSError:
                return
            time.sleep(0.01)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    try:
        link = SerialLink.over_socket(host, 0.3, label="chatty")
        started = time.monotonic()
        with pytest.raises(ProtocolError, match=r"^chatty: no reply to 'boot' within 0.3 s \(silent target\)$"):
            link.wait_ready("boot")
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        thread.join()
        host.close()
        device.close()


@pytest.fixture
def stream_link():
    """Makes links labelled "t" over socket pairs whose far end has sent the given bytes, then stays quiet."""
    sockets = []

    def make(stream: bytes) -> SerialLink:
        host, device = socket.socketpair()
        sockets.extend((host, device))
        device.sendall(stream)
        return SerialLink.over_socket(host, 1.0, label="t")

    yield make
    for end in sockets:
        end.close()


@pytest.mark.parametrize("stream, step, message", [
    # garbled bytes: at most 40 of them are quoted
    (b"m-" + b"\xff" * 48 + b"\r\nm-ready\r\n", "name",
     "t: garbled bytes on the link: b'm-" + "\\xff" * 38 + "'"),
    # a control character makes a line garbled: at most 40 bytes of it are quoted
    (b"\x07" + b"a" * 70 + b"\r\nm-ready\r\n", "name", "t: garbled bytes on the link: b'\\x07" + "a" * 39 + "'"),
    (b"m-model-[" + b"n" * 70 + b"\r\nm-ready\r\n", "profile",
     "t: 'profile' replied a malformed model line: 'm-model-[" + "n" * 51 + "'"),
    (b"m-results-[" + b"1," * 40 + b"\r\nm-ready\r\n", "results",
     "t: 'results' replied a malformed line: 'm-results-[" + "1," * 24 + "1'"),
    # a value that is no integer: at most 20 characters of it
    (b"m-results-int8-[1," + b"x" * 30 + b"]\r\nm-ready\r\n", "results", "t: 'results' value '" + "x" * 20
     + "' is not an integer"),
    (b"m-results-[1," + b"x" * 30 + b"]\r\nm-ready\r\n", "results", "t: 'results' value '" + "x" * 20
     + "' is not a number"),
    (b"m-results-int8-[128]\r\nm-ready\r\n", "results", "t: 'results' value 128 is outside int8's -128..127"),
    (b"m-results-int8-[0128]\r\nm-ready\r\n", "results", "t: 'results' value 0128 is outside int8's -128..127"),
    (b"m-lap-us-3\r\nm-ready\r\n", "results", "t: 'results' replied without an m-results line"),
    (b"e-oops\r\nm-ready\r\n", "name", "t: 'name' failed on the target: oops"),
    (b"e-[XIP flash unreadable X]\r\nm-ready\r\n", "name", "t: 'name' failed on the target: XIP flash unreadable X"),
])
def test_each_fault_line_quotes_a_bounded_part_of_what_came(stream_link, stream, step, message):
    link = stream_link(stream)
    with pytest.raises(ProtocolError) as caught:
        link.profile() if step == "profile" else link.results() if step == "results" else link.command(step)
    assert str(caught.value) == message


def test_results_with_leading_zeros_are_their_values(stream_link):
    """Leading zeros do not count towards a value's size: 0000127 is 127, -0128 is -128, -000 is 0."""
    _, values = stream_link(b"m-results-int8-[007,-0128,0000127,000,-000,0]\r\nm-ready\r\n").results()
    assert values.dtype == np.int8 and values.tolist() == [7, -128, 127, 0, 0, 0]


def test_waiting_for_ready_is_at_boot_unless_told_otherwise(stream_link):
    """By default m-init-done is a boot line, not a reset."""
    assert stream_link(b"m-init-done\r\nm-ready\r\n").wait_ready() == ["m-init-done"]


def test_an_empty_input_the_target_never_reports_loaded_is_a_one_line_error(stream_link):
    """No chunk is sent for an empty input; a target that accepts 'db load 0' has not said m-load-done."""
    link = stream_link(b"m-[Expecting 0 bytes]\r\nm-ready\r\n")
    with pytest.raises(ProtocolError, match=r"^t: the last 'db' chunk of 0 bytes was not answered m-load-done$"):
        link.load_input(b"")


# --- a pyserial port on a pseudo-terminal ------------------------------------------------------------


class PtyPeer(threading.Thread):
    """Test double of a board behind a serial port: a thread on a pseudo-terminal's master side that
    answers each command with scripted pieces (bytes are written, a float pauses that many seconds)
    and records the commands. ``port`` is the host's pyserial port on the slave side."""

    def __init__(self, replies: dict[str, list], port_class=None):
        import serial

        super().__init__(daemon=True)
        self.replies, self.commands = replies, []
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as on a UART
        self.port = (port_class or serial.Serial)(os.ttyname(slave), 115200)
        os.close(slave)  # the port holds the line open from here on
        self.start()

    def run(self) -> None:
        for command in received_commands(lambda size: os.read(self.master, size)):  # ends when the host closes
            self.commands.append(command)
            for piece in self.replies.get(command.split(" ")[0], []):
                if isinstance(piece, float):
                    time.sleep(piece)
                else:
                    os.write(self.master, piece)
        os.close(self.master)

    def close(self) -> None:
        self.port.close()
        self.join(5)


@pytest.fixture
def pty_peers():
    pytest.importorskip("serial", reason="pyserial drives the board's port: pip install pyserial")
    peers = []
    yield lambda replies, port_class=None: peers.append(PtyPeer(replies, port_class)) or peers[-1]
    for peer in peers:
        peer.close()


def test_a_serial_link_defaults_to_10_s_and_the_label_target(pty_peers):
    peer = pty_peers({"name": [b"\x07bad\r\nm-ready\r\n"]})
    link = SerialLink.over_serial(peer.port)
    assert peer.port.timeout == 10.0
    with pytest.raises(ProtocolError, match=r"^target: garbled bytes on the link: b'\\x07bad'$"):
        link.command("name")


def test_a_serial_link_returns_once_the_last_byte_arrives_alone(pty_peers):
    """A reply whose final newline comes by itself, after a pause, is complete when that one byte
    arrives: the link never waits for more bytes than are on their way."""
    peer = pty_peers({"name": [b"m-name-x\r\nm-ready\r", 0.3, b"\n"]})
    link = SerialLink.over_serial(peer.port, 4.0, label="board")
    started = time.monotonic()
    assert link.command("name") == ["m-name-x"]
    assert time.monotonic() - started < 2.0  # well before the 4 s port timeout


def test_a_serial_link_takes_a_waiting_reply_in_a_few_reads_not_byte_by_byte(pty_peers):
    import serial

    class CountingSerial(serial.Serial):
        """The real port, counting its reads."""

        reads = 0

        def read(self, size=1):
            self.reads += 1
            return super().read(size)

    line = "m-name-" + "x" * 2000
    peer = pty_peers({"name": [f"{line}\r\nm-ready\r\n".encode()]}, CountingSerial)
    link = SerialLink.over_serial(peer.port, 4.0, label="board")
    assert link.command("name") == [line]
    assert peer.port.reads <= 20, peer.port.reads  # 2 KB arrive in a few pieces; one byte a read would be ~2000


def test_a_silent_serial_port_is_a_silent_target(pty_peers):
    peer = pty_peers({})
    link = SerialLink.over_serial(peer.port, 0.3, label="board")
    with pytest.raises(ProtocolError, match=r"^board: no reply to 'name' within 0.3 s \(silent target\)$"):
        link.command("name")
    assert peer.commands == ["name"]


def test_infer_defaults_to_one_run_and_no_warmup(pty_peers):
    peer = pty_peers({"infer": [b"m-instructions-5\r\nm-ready\r\n"]})
    assert SerialLink.over_serial(peer.port, 2.0).infer().figures == {"instructions": 5}
    assert peer.commands == ["infer 1 0"]


# --- SerialTarget: what it sends and what it reports ---------------------------------------------------


class RecordingPeer(FaultyPeer):
    """A well-behaved FaultyPeer that also records every command it is sent."""

    def __init__(self, tflite: bytes):
        self.commands: list[str] = []
        super().__init__(tflite)

    def _answer(self, command: str) -> bool:
        self.commands.append(command)
        return super()._answer(command)


class RecordingTarget(PeerTarget):
    """A PeerTarget recording what ``prepare`` hands its image builder and session opener, and
    reporting the timed run's lap time as its platform counter."""

    def __init__(self, build_dir: Path):
        super().__init__({}, build_dir)
        self.built: list[tuple[Path, int]] = []  # (ELF, arena bytes) of each build
        self.opened: list[Path] = []

    def build_image(self, tflite, workdir, label, arena_bytes):
        elf = super().build_image(tflite, workdir, label, arena_bytes)
        self.built.append((elf, arena_bytes))
        return elf

    def open_session(self, elf):
        self.opened.append(elf)
        self.sessions.append(PeerSession(RecordingPeer(self._tflite), self.timeout_s))
        return self.sessions[-1]

    def platform_counters(self, inference) -> dict:
        return {"peer_lap_us": inference.elapsed_us}


needs_firmware = pytest.mark.skipif(bool(firmware.missing_tools()), reason=f"{firmware.missing_tools()}")


@pytest.fixture(scope="module")
def peer_firmware(tmp_path_factory):
    return tmp_path_factory.mktemp("peer-firmware")


@needs_firmware
def test_prepare_builds_with_room_for_the_arena_and_opens_the_built_image(hand_tflite, tmp_path, peer_firmware):
    target = RecordingTarget(peer_firmware)
    try:
        target.prepare(hand_tflite, tmp_path, "m")
    finally:
        target.close()
    [(elf, arena_bytes)] = target.built
    assert isinstance(arena_bytes, int) and arena_bytes >= HostTFLM(hand_tflite).arena_bytes()
    assert target.opened == [elf] and elf.is_file()


@needs_firmware
def test_counters_time_one_fixed_int8_sample_and_report_each_figure(hand_tflite, tmp_path, peer_firmware):
    """Two targets time the same int8 sample (TIMED_RUNS runs, no warmup); the figures are the ELF's
    memory, the profile's arena, the peer's instruction count and lap, and bit-exactness."""
    sent, figures = [], []
    for attempt in range(2):
        target = RecordingTarget(peer_firmware)
        try:
            target.prepare(hand_tflite, tmp_path / str(attempt), "m")
            figures.append(target.counters())
        finally:
            target.close()
        peer = target.sessions[-1].peer
        assert [c for c in peer.commands if c.startswith("infer")] == [f"infer {TIMED_RUNS} 0"]
        sent.append(peer.inputs)
    host = HostTFLM(hand_tflite)
    assert sent[0] == sent[1] and len(sent[0]) == 1 and len(sent[0][0]) == int(np.prod(host.input_shape))
    memory = firmware.memory_figures(target.built[0][0])
    assert figures[0] == figures[1]
    assert figures[0] == {"flash_bytes": memory["flash_bytes"], "flash_breakdown": memory["flash_breakdown"],
                          "sram_bytes": memory["ram_bytes"], "tflm_arena_bytes": 4096, "instructions": 32000,
                          "latency_is_estimate": False, "bit_exact": True, "peer_lap_us": 10000}


@needs_firmware
def test_infer_sends_each_sample_as_int8_for_one_run(hand_tflite, tmp_path, peer_firmware):
    """Inputs of a wider integer type are sent as their int8 bytes, one 'infer 1 0' per sample."""
    host = HostTFLM(hand_tflite)
    samples = np.stack([np.random.default_rng(seed).integers(-128, 128, host.input_shape[1:]) for seed in range(2)])
    assert samples.dtype == np.int64
    target = RecordingTarget(peer_firmware)
    try:
        target.prepare(hand_tflite, tmp_path, "m")
        outputs = target.infer(samples)
    finally:
        target.close()
    peer = target.sessions[-1].peer
    expected = np.stack([host.infer(sample.astype(np.int8)[None]).reshape(-1) for sample in samples])
    np.testing.assert_array_equal(outputs, expected)
    assert peer.inputs == [sample.astype(np.int8).tobytes() for sample in samples]
    assert [c for c in peer.commands if c.startswith("infer")] == ["infer 1 0", "infer 1 0"]
