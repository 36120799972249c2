"""The benchmark firmware built without TFLM and run on QEMU's mps3-an547: real firmware, real
emulator. Skips with the reason where the cross compiler or QEMU is not installed."""

import os
import shutil

import pytest

from core.errors import HarnessError
from targets import firmware
from targets.qemu_an547 import QemuSession
from targets.serial_link import HEX_CHUNK_BYTES, ProtocolError
from targets.sessions import OUTPUT_LINES_KEPT

needs_qemu = pytest.mark.skipif(
    bool(firmware.missing_tools()) or shutil.which("qemu-system-arm") is None,
    reason=f"{firmware.missing_tools() or 'qemu-system-arm not found'} (apt-get install gcc-arm-none-eabi "
           "libnewlib-arm-none-eabi qemu-system-arm cmake)")
pytestmark = needs_qemu


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return firmware.build(tmp_path_factory.mktemp("firmware") / "an547")


def test_no_model_firmware_speaks_the_protocol_on_qemu(elf):
    with QemuSession(elf) as session:
        assert session.boot_lines[0] == "m-timestamp-mode-performance" and session.boot_lines[2] == "m-init-done"
        assert session.link.command("name") == ["m-name-dut-[udc-harness an547]"]
        assert session.link.profile() == {"profile": "udc-harness benchmark core", "model": "ic01",
                                          "input_format": "uint8-shifted", "input_bytes": 0, "output_bytes": 0,
                                          "arena_bytes": 0}
        session.link.load_input(bytes(range(256)) * 5)  # 1280 bytes: two db chunks
        with pytest.raises(ProtocolError, match="'infer' failed on the target: no model in this firmware"):
            session.link.infer(runs=3, warmups=1)
        with pytest.raises(ProtocolError, match="Unknown command: bogus"):
            session.link.command("bogus")
        with pytest.raises(ProtocolError, match="'db' failed on the target: not a hex digit"):
            session.link.command("db zz")
        assert session.exit(7) == 7  # semihosting exit: QEMU's status is the firmware's


def test_an_input_of_more_than_two_chunks_is_accepted_by_the_firmware(elf):
    """5000 bytes go as several "db" commands, each inside the firmware's 4095-character command line;
    it answers m-load-done, and infer gets past its complete-input check to the missing model."""
    data = bytes((7 * i + 3) % 256 for i in range(5000))
    assert len(data) > 2 * HEX_CHUNK_BYTES
    with QemuSession(elf) as session:
        session.link.load_input(data)
        with pytest.raises(ProtocolError, match="'infer' failed on the target: no model in this firmware"):
            session.link.infer(runs=1, warmups=0)


def test_a_killed_emulator_is_a_closed_link_and_no_orphan_remains(elf):
    session = QemuSession(elf, timeout_s=5)
    session.process.kill()
    with pytest.raises(ProtocolError, match="link closed|link failed"):
        session.link.command("name")
    session.close()
    assert session.process.poll() is not None


def test_an_emulator_writing_megabytes_to_stderr_never_stalls(elf, tmp_path, monkeypatch):
    """QEMU's own instruction trace (-d in_asm, megabytes on stderr) fills any pipe nobody reads."""
    real = shutil.which("qemu-system-arm")
    wrapper = tmp_path / "qemu-system-arm"
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@" -d in_asm\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with QemuSession(elf) as session:
        for _ in range(20):  # each round trip translates new blocks: more trace
            assert session.link.command("name") == ["m-name-dut-[udc-harness an547]"]
        assert session.link.profile()["model"] == "ic01"
        assert len(session.output_tail) == OUTPUT_LINES_KEPT  # drained, and only the tail kept


def test_an_emulator_that_cannot_start_is_one_line_with_its_reason(tmp_path):
    with pytest.raises(HarnessError, match=r"qemu-system-arm exited with 1 while booting: .*missing\.elf"):
        QemuSession(tmp_path / "missing.elf")


def test_flash_and_ram_come_from_the_linked_elf(elf):
    figures = firmware.memory_figures(elf)
    breakdown = figures["flash_breakdown"]
    assert breakdown["code"] > 1000 and breakdown["model"] == 0  # no model in this build
    assert figures["flash_bytes"] == sum(breakdown.values())
    assert figures["ram_bytes"] >= 128 * 1024  # heap and stack reserve 64 KiB each


def test_an_image_too_big_for_its_region_is_refused_at_link_time(tmp_path):
    model = tmp_path / "model_huge.c"  # a 20 MB "model" for the 16 MB DDR region
    model.write_text((firmware.FIRMWARE_DIR / "core" / "model_none.c").read_text()
                     + '__attribute__((section(".model"), used)) static const unsigned char model_data[20 << 20] = {1};\n')
    with pytest.raises(HarnessError, match=r"does not fit the DDR region: \d+ bytes too many"):
        firmware.build(tmp_path / "big", model_source=model)
