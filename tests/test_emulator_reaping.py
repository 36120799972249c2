"""Emulators never leak and never race: a QEMU whose harness is SIGKILLed (no close, no atexit) is
killed by the kernel within seconds, and QEMU's UART is a Unix socket in a private folder, so there is
no port to race for and no other user can connect. Real QEMU running the real no-model firmware."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets import firmware
from targets.qemu_an547 import QemuSession, qemu_command
from tests.test_firmware_qemu import needs_qemu

ROOT = Path(__file__).resolve().parent.parent

# A harness in miniature: opens a QEMU session, says QEMU's pid, and waits to be killed.
HARNESS = """
import sys
from pathlib import Path
from targets.qemu_an547 import QemuSession
session = QemuSession(Path(sys.argv[1]))
print(session.process.pid, flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    return firmware.build(tmp_path_factory.mktemp("firmware") / "an547")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@needs_qemu
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_sigkilled_harness_takes_its_emulator_with_it(elf):
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(elf)], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    qemu = None
    try:
        qemu = int(harness.stdout.readline())  # the session booted: m-init-done, m-ready
        assert _running(qemu) and "qemu-system-arm" in Path(f"/proc/{qemu}/cmdline").read_text()
        harness.send_signal(signal.SIGKILL)
        harness.wait(10)
        deadline = time.monotonic() + 5
        while _running(qemu) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(qemu), "QEMU outlived the harness that started it"
    finally:
        harness.kill()
        if qemu is not None and _running(qemu):
            os.kill(qemu, signal.SIGKILL)


def test_qemus_uart_is_a_unix_socket_not_a_tcp_port(tmp_path):
    command = qemu_command(tmp_path / "fw.elf", tmp_path / "uart0.sock")
    chardev = command[command.index("-chardev") + 1]
    assert chardev == f"socket,id=uart0,path={tmp_path / 'uart0.sock'},server=on,wait=on"
    assert command[command.index("-serial") + 1] == "chardev:uart0"
    assert not any("tcp:" in word or "port=" in word for word in command)


@needs_qemu
def test_the_socket_lives_in_a_private_folder_removed_on_close(elf):
    with QemuSession(elf) as session:
        folder = session.uart_socket.parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
        assert stat.S_ISSOCK(session.uart_socket.stat().st_mode)
        assert session.link.command("name") == ["m-name-dut-[udc-harness an547]"]
    assert not folder.exists()
    assert session.process.poll() is not None
