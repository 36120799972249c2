"""The firmware speaks MLPerf Tiny's reference protocol (docs/protocol.md), checked byte for byte over
QEMU's UART socket with no host protocol code in between: the boot lines, every command's reply, the
reference's errors, an over-long command, whole-word matching and exit. The no-model firmware runs
wherever the cross compiler and QEMU are installed (as in CI); the model images need TFLM (TFLM_ROOT)."""

import re
import shutil
import subprocess
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from core.errors import HarnessError
from targets import firmware
from targets.qemu_an547 import QemuAn547Target, _private_folder, qemu_command
from targets.sessions import ProcessSession

needs_qemu = pytest.mark.skipif(
    bool(firmware.missing_tools()) or shutil.which("qemu-system-arm") is None,
    reason=f"{firmware.missing_tools() or 'qemu-system-arm not found'} (apt-get install gcc-arm-none-eabi "
           "libnewlib-arm-none-eabi qemu-system-arm cmake)")
TFLM_MISSING = QemuAn547Target().available()
needs_tflm = pytest.mark.skipif(TFLM_MISSING is not None, reason=f"qemu-an547: {TFLM_MISSING}")
LAP = re.compile(r"^m-lap-us-([0-9]+)$")
NAME = re.compile(r"^m-(name)-dut-\[([^]]+)]$")  # the runner's patterns (device_under_test.py)
PROFILE = re.compile(r"^m-(model|profile)-\[([^]]+)]$")


class RawQemu(ProcessSession):
    """QEMU running ``elf`` with its UART as a plain socket: commands go out as bytes, replies come back as
    the lines up to and including the next m-ready."""

    def __init__(self, elf: Path):
        self.folder = _private_folder()
        self.pending = b""
        try:
            super().__init__(qemu_command(elf, self.folder / "uart0.sock"))
            self.connection = self.connect(self.folder / "uart0.sock", 20.0, "its UART")
            self.boot_lines = self.reply()
        except BaseException:
            self.close()
            raise

    def reply(self, timeout_s: float = 20.0) -> list[str]:
        lines, deadline = [], time.monotonic() + timeout_s
        while True:
            while b"\r\n" in self.pending:
                line, self.pending = self.pending.split(b"\r\n", 1)
                lines.append(line.decode())
                if lines[-1] == "m-ready":
                    return lines
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no m-ready within {timeout_s} s after {lines} {self.pending[:200]!r}"
            self.connection.settimeout(remaining)
            data = self.connection.recv(65536)
            assert data, f"the link closed after {lines} {self.pending[:200]!r}"
            self.pending += data

    def ask(self, command: str) -> list[str]:
        self.connection.sendall(command.encode() + b"%")
        return self.reply()

    def quiet(self, for_s: float = 0.5) -> bool:
        """Whether nothing more arrives (nothing is pending and the link stays silent for ``for_s``)."""
        self.connection.settimeout(for_s)
        try:
            self.pending += self.connection.recv(65536)
        except TimeoutError:
            pass
        return not self.pending

    def load(self, data: bytes) -> None:
        assert self.ask(f"db load {len(data)}") == [f"m-[Expecting {len(data)} bytes]", "m-ready"]
        for start in range(0, len(data), 1024):
            last = start + 1024 >= len(data)
            assert self.ask(f"db {data[start:start + 1024].hex()}") == ["m-load-done"] * last + ["m-ready"]

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return firmware.build(tmp_path_factory.mktemp("firmware") / "an547")


@pytest.fixture
def qemu(elf):
    with RawQemu(elf) as session:
        yield session


@needs_qemu
def test_the_boot_lines_are_the_references(qemu):
    assert [LAP.sub("m-lap-us-N", line) for line in qemu.boot_lines] == [
        "m-timestamp-mode-performance", "m-lap-us-N", "m-init-done", "m-ready"]


@needs_qemu
def test_name_profile_timestamp_and_help_as_the_runner_reads_them(qemu):
    name = qemu.ask("name")
    assert len(name) == 2 and NAME.match(name[0]).group(2) == "udc-harness an547" and name[1] == "m-ready"
    profile = qemu.ask("profile")
    assert dict(PROFILE.match(line).groups() for line in profile if PROFILE.match(line)) == {
        "profile": "udc-harness benchmark core", "model": "ic01"}
    assert profile[2:] == ["m-input-format-[uint8-shifted]", "m-input-bytes-0", "m-output-bytes-0",
                           "m-arena-bytes-0", "m-ready"]
    laps = []
    for _ in range(3):
        reply = qemu.ask("timestamp")
        assert len(reply) == 2 and reply[1] == "m-ready"
        laps.append(int(LAP.match(reply[0]).group(1)))
    assert int(LAP.match(qemu.boot_lines[1]).group(1)) <= laps[0] <= laps[1] <= laps[2]
    help_lines = qemu.ask("help")
    assert help_lines[-1] == "m-ready" and len(help_lines) > 8
    assert not [line for line in help_lines[:-1] if line.startswith(("m-", "e-"))]  # log lines only
    commands = {line.split()[0] for line in help_lines[1:-1]}
    assert {"help", "name", "timestamp", "profile", "db", "infer", "results", "exit"} <= commands


@needs_qemu
def test_db_loads_and_prints_the_buffer_as_sent(qemu):
    assert qemu.ask("db load 4") == ["m-[Expecting 4 bytes]", "m-ready"]
    assert qemu.ask("db 0102") == ["m-ready"]
    printed = qemu.ask("db print")  # the whole buffer, the bytes not loaded yet included
    assert len(printed) == 2 and re.fullmatch(r"m-buffer-01-02-[0-9a-f]{2}-[0-9a-f]{2}", printed[0])
    assert qemu.ask("db 80ff") == ["m-load-done", "m-ready"]
    assert qemu.ask("db print") == ["m-buffer-01-02-80-ff", "m-ready"]  # as sent: the uint8 shift is inside
    qemu.load(bytes(range(10)))
    assert qemu.ask("db print") == ["m-buffer-00-01-02-03-04-05-06-07", "m-buffer-08-09", "m-ready"]
    assert qemu.ask("db") == ["e-[Command 'db' requires a subcommand]", "m-ready"]
    assert qemu.ask("db load x")[0].startswith("e-[")
    assert qemu.ask("db 01 02")[0].startswith("e-[")


@needs_qemu
def test_infer_answers_the_references_errors_and_the_missing_model(qemu):
    assert qemu.ask("infer 0") == ["e-[Inference iterations must be >0]", "m-ready"]
    assert qemu.ask("infer -3 1") == ["e-[Inference iterations must be >0]", "m-ready"]
    assert qemu.ask("infer 1 -1") == ["e-[Inference warmup must be >=0]", "m-ready"]
    for junk in ("infer 1x", "infer 1 w", "infer 99999999999999999999"):
        reply = qemu.ask(junk)
        assert len(reply) == 2 and reply[0].startswith("e-[infer: not a number") and reply[1] == "m-ready"
    assert qemu.ask("infer") == ["e-[no complete input loaded]", "m-ready"]
    qemu.load(bytes(16))
    reply = qemu.ask("infer")  # the reference's defaults: 1 run after 10 warm-ups
    assert reply[0] == "m-warmup-start-10" and reply[-1] == "m-ready" and len(reply) == 3
    assert reply[1].startswith("e-[no model in this firmware")
    assert qemu.ask("results") == ["e-[no results: run infer first]", "m-ready"]


@needs_qemu
def test_an_over_long_command_is_one_error_and_the_link_stays_in_step(qemu):
    assert qemu.ask("name " + "x" * 5000) == ["e-[command longer than 4095 characters]", "m-ready"]
    assert qemu.quiet()  # one reply, not a second one for the tail of the command
    assert qemu.ask("name") == ["m-name-dut-[udc-harness an547]", "m-ready"]
    qemu.connection.sendall(b"x" * 9000 + b"\r\n%profile%")
    assert qemu.reply() == ["e-[command longer than 4095 characters]", "m-ready"]
    assert qemu.reply()[0] == "m-profile-[udc-harness benchmark core]"
    assert qemu.ask("db load 2046") == ["m-[Expecting 2046 bytes]", "m-ready"]
    command = "db " + "ab" * 2046  # 4095 characters: the longest command taken
    assert len(command) == 4095 and qemu.ask(command) == ["m-load-done", "m-ready"]


@needs_qemu
def test_commands_are_whole_words_and_exit_ends_qemu_with_its_code(qemu):
    assert qemu.ask("exits") == ["e-[Unknown command: exits]", "m-ready"]
    assert qemu.ask("names") == ["e-[Unknown command: names]", "m-ready"]
    assert qemu.ask("") == ["e-[Unknown command: ]", "m-ready"]
    assert qemu.ask("y" * 100) == [f"e-[Unknown command: {'y' * 40}]", "m-ready"]
    assert qemu.ask("exit now") == ["e-[exit: not a number: now]", "m-ready"]
    assert qemu.process.poll() is None
    assert qemu.ask("name") == ["m-name-dut-[udc-harness an547]", "m-ready"]
    qemu.connection.sendall(b"exit 3%")
    assert qemu.process.wait(10) == 3


@needs_qemu
def test_the_model_id_and_the_baud_rate_are_build_settings(tmp_path):
    with RawQemu(firmware.build(tmp_path / "kws", model_id="kws01", baud=921600)) as qemu:
        assert qemu.ask("profile")[1:3] == ["m-model-[kws01]", "m-input-format-[int8]"]
        qemu.load(bytes([1, 0x80, 0xff]))
        assert qemu.ask("db print") == ["m-buffer-01-80-ff", "m-ready"]
    with pytest.raises(HarnessError, match="static assertion failed: .*divider must be at least 16"):
        firmware.build(tmp_path / "fast", baud=2_000_000)  # 25 MHz / 2 MBd: a divider of 12


def test_an_image_is_built_per_model_id_and_baud_rate(tmp_path):
    operators = ["CONV_2D"]
    default = firmware.image_build_dir(tmp_path, operators)
    assert default == firmware.image_build_dir(tmp_path, operators, "ic01", 115200)
    assert len({default, firmware.image_build_dir(tmp_path, operators, "kws01"),
                firmware.image_build_dir(tmp_path, operators, baud=921600)}) == 3


FIXED3_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "text.h"
int main(void) {
    char line[64], text[TEXT_FIXED3_SIZE];
    while (fgets(line, sizeof line, stdin)) puts(text_fixed3(strtof(line, NULL), text));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")
def test_results_are_printed_with_three_decimals_rounded_half_away_from_zero(tmp_path):
    """The firmware's formatter (firmware/core/text.c) built for the host, against exact decimal rounding
    of every int8 value dequantised with a few scales and zero points, and the edge cases."""
    driver = tmp_path / "fixed3.c"
    driver.write_text(FIXED3_DRIVER)
    core = firmware.FIRMWARE_DIR / "core"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{core}", str(driver), str(core / "text.c"),
                    "-o", str(tmp_path / "fixed3")], check=True)
    q = np.arange(-128, 128, dtype=np.float32)
    values = [np.float32(scale) * (q - np.float32(zp)) for scale, zp in
              ((1 / 256, -128), (0.00390625, 0), (0.1, 3), (0.0123, -7), (2.5e-4, 10), (7.77, 0), (1e-6, 1))]
    extras = [0.0625, -0.0625, 0.0005, -0.0015, 1e-9, 123456.5]
    values = [float(v) for v in np.concatenate([*values, np.array(extras, np.float32)])]
    expected = [str(Decimal(v).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)) for v in values]
    huge = [float(np.float32(v)) for v in (1e15, 1e20, -3e38, 3.4028235e38)]  # 15 digits kept, then zeros
    values += huge
    expected += [f"{int(Decimal(v).quantize(Decimal(1).scaleb(Decimal(v).adjusted() - 14), ROUND_HALF_UP))}.000"
                 for v in huge]
    special = {"nan": "nan", "inf": "inf", "-inf": "-inf"}
    stdin = "".join(f"{v!r}\n" for v in values) + "".join(f"{v}\n" for v in special)
    printed = subprocess.run([str(tmp_path / "fixed3")], input=stdin, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert printed[:len(values)] == expected
    assert printed[len(values):] == list(special.values())
    assert expected[-10:-7] == ["0.063", "-0.063", "0.001"]  # exact ties go away from zero


# ------------------------------------------------------------------------- model images (TFLM)

INFER = re.compile(r"^m-warmup-start-1 m-warmup-done m-infer-start-2 m-lap-us-(\d+) m-lap-us-(\d+) "
                   r"m-instructions-(\d+) m-infer-done m-results-\[([^]]*)] m-results-int8-\[([^]]*)] m-ready$")


def _model_image(hand_tflite: bytes, workdir: Path, model_id: str) -> Path:
    from targets.host_tflm import HostTFLM

    target = QemuAn547Target(model_id=model_id, model_loading="linked")
    return target.build_image(hand_tflite, workdir, "hand", HostTFLM(hand_tflite).arena_bytes() + 16 * 1024)


def _input_and_host_output(hand_tflite: bytes) -> tuple[np.ndarray, np.ndarray]:
    from core.tflite_model import read_tflite
    from targets.host_tflm import HostTFLM

    shape = read_tflite(hand_tflite).input.shape[1:]
    x = np.random.default_rng(3).integers(-128, 128, shape, dtype=np.int8)
    return x, np.asarray(HostTFLM(hand_tflite).infer(x[None])).reshape(-1)


@needs_tflm
def test_a_kws01_image_takes_int8_and_prints_the_references_results(tmp_path, hand_tflite):
    from core.tflite_model import read_tflite

    x, host = _input_and_host_output(hand_tflite)
    output = read_tflite(hand_tflite).output
    scale, zero_point = float(output.scales[0]), int(output.zero_points[0])
    with RawQemu(_model_image(hand_tflite, tmp_path, "kws01")) as qemu:
        assert qemu.ask("profile")[1:3] == ["m-model-[kws01]", "m-input-format-[int8]"]
        qemu.load(x.tobytes())
        reply = qemu.ask("infer 2 1")
        match = INFER.match(" ".join(reply))
        assert match, reply
        t0, t1, instructions = (int(match.group(i)) for i in (1, 2, 3))
        assert t0 <= t1 and instructions > 0
        floats = match.group(4).split(",")
        int8 = np.array([int(v) for v in match.group(5).split(",")])
        assert all(re.fullmatch(r"-?\d+\.\d{3}", v) for v in floats)
        assert np.abs(np.array([float(v) for v in floats]) - scale * (int8 - zero_point)).max() <= 0.0005
        assert np.array_equal(int8, host)
        assert qemu.ask("results") == reply[-3:]


@needs_tflm
def test_an_ic01_image_takes_uint8_shifted_input(tmp_path, hand_tflite):
    from targets.host_tflm import HostTFLM

    x, host = _input_and_host_output(hand_tflite)
    unshifted = HostTFLM(hand_tflite).infer((x.view(np.uint8) ^ 0x80).view(np.int8)[None]).reshape(-1)
    assert not np.array_equal(unshifted, host)  # the shift shows in the outputs
    with RawQemu(_model_image(hand_tflite, tmp_path, "ic01")) as qemu:
        assert qemu.ask("profile")[2] == "m-input-format-[uint8-shifted]"
        qemu.load((x.view(np.uint8) ^ 0x80).tobytes())
        results = qemu.ask("infer 1 0")[-2]
        assert results.startswith("m-results-int8-[")
        assert np.array_equal(np.array([int(v) for v in results[16:-1].split(",")]), host)
