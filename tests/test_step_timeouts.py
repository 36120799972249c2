"""Every external step has a timeout, and a step that runs past it, or fails, is one HarnessError line
naming the step: cmake (configure and build), TFLM's make, arm-none-eabi-size, the emulator's boot. The
hanging tools are test doubles on PATH (a real tool does not hang on demand); each also starts a child,
which must be killed with it. The failing arm-none-eabi-size and the frozen QEMU are the real tools."""

import os
import shutil
import time
from pathlib import Path

import pytest

from core.errors import HarnessError
from targets import firmware, qemu_an547
from targets.qemu_an547 import QemuSession
from targets.serial_link import ProtocolError
from tests.test_firmware_qemu import needs_qemu
from tests.test_firmware_setup import _checkout


def _hanging_tool(directory: Path, name: str) -> Path:
    """Test double of ``name``: starts a child that sleeps, writes the child's pid, and waits for it."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f'#!/bin/sh\nsleep 600 &\necho $! > "{directory / (name + ".child")}"\nwait\n')
    tool.chmod(0o755)
    return directory / (name + ".child")


def _gone(pid_file: Path, within_s: float = 5.0) -> bool:
    """The process is dead (or a zombie) within ``within_s``: SIGKILL reaches a process group's members
    asynchronously, so under load a member can still be listed as running just after the kill."""
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_hanging_cmake_is_killed_with_its_children_and_named(tmp_path, monkeypatch):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not found (apt-get install gcc-arm-none-eabi)")
    child = _hanging_tool(tmp_path / "bin", "cmake")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setitem(firmware.STEP_TIMEOUTS_S, "cmake configure", 1.0)
    started = time.monotonic()
    with pytest.raises(HarnessError) as caught:
        firmware.build(tmp_path / "build")
    assert str(caught.value) == "firmware build (an547): cmake configure did not finish within 1 s and was killed"
    assert time.monotonic() - started < 10 and _gone(child)


def test_a_hanging_tflm_make_is_killed_and_named(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    child = _hanging_tool(tmp_path / "bin", "make")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setitem(firmware.STEP_TIMEOUTS_S, "TFLM library build", 1.0)
    with pytest.raises(HarnessError, match=r"^TFLM library build \(make\) did not finish within 1 s and was killed$"):
        firmware.build_tflm(_checkout(tmp_path / "tflm"))
    assert _gone(child)


def test_an_elf_arm_none_eabi_size_cannot_read_is_one_line(tmp_path):
    if shutil.which("arm-none-eabi-size") is None:
        pytest.skip("arm-none-eabi-size not found (apt-get install binutils-arm-none-eabi)")
    elf = tmp_path / "benchmark.elf"
    elf.write_bytes(b"not an ELF")
    with pytest.raises(HarnessError) as caught:
        firmware.memory_figures(elf)
    message = str(caught.value)
    assert message.startswith(f"arm-none-eabi-size cannot read {elf}: ") and "format not recognized" in message
    assert "\n" not in message


@needs_qemu
def test_an_emulator_that_never_boots_is_named_with_its_boot_timeout_and_killed(tmp_path, monkeypatch):
    """QEMU started frozen (-S, a wrapper on PATH): its UART accepts, the firmware never says m-ready."""
    elf = firmware.build(tmp_path / "an547")
    wrapper = tmp_path / "bin" / "qemu-system-arm"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("qemu-system-arm")} "$@" -S\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(qemu_an547, "BOOT_TIMEOUT_S", 1.0)
    with pytest.raises(ProtocolError, match=r"^qemu-an547: no reply to 'boot' within 1 s \(silent target\)$"):
        QemuSession(elf, timeout_s=1.0)
    assert not _processes_running(str(elf))  # the frozen QEMU was killed


def _processes_running(argument: str) -> list[int]:
    """The live processes with ``argument`` on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and argument.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(int(proc.name))
        except OSError:
            continue
    return found
