"""Faults of serial targets, end to end: each is detected, reported in one line, stored as a failed
measurement, and the run goes on to the next model. The misbehaving devices are ``FaultyPeer`` test
doubles (tests/faulty_peer.py); the emulator faults use real QEMU with the real no-model firmware."""

import os
import shutil
import signal

import pytest

from harness import firmware
from harness.pipeline import Evaluation, Pipeline
from results.store import Store
from targets.qemu_an547 import QemuSession
from targets.serial_protocol import ProtocolError
from tests.faulty_peer import PeerTarget

pytestmark = pytest.mark.skipif(bool(firmware.missing_tools()), reason=f"{firmware.missing_tools()} "
                                "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi cmake)")

EXPECTED = {  # fault -> the one line stored for it (None: measured fine)
    "none": None,
    "split": None,
    "garbled": "peer: garbled bytes on the link",
    "silent": "peer: no reply within 1 s (silent target)",
    "killed": "peer: link",  # closed mid-reply, or failed, as the transport reports a hang-up
    "reset": "peer: the target reset during 'infer'",
    "error": "peer: 'infer' failed on the target: Invoke failed",
    "too-big": "firmware build failed (an547): the image does not fit the DDR region",
}


@pytest.mark.parametrize("transport", ["socket", "pty"])
def test_every_fault_is_a_failed_row_and_the_run_goes_on(transport, hand_tflite, tmp_path):
    if transport == "pty":
        pytest.importorskip("serial", reason="pyserial drives the board's port: pip install pyserial")
    models = []
    for fault in EXPECTED:
        models.append(tmp_path / f"{fault}.tflite")
        models[-1].write_bytes(hand_tflite)
    target = PeerTarget({fault: fault for fault in EXPECTED}, tmp_path / "firmware", transport)
    with Store(f"sqlite:///{tmp_path / 'results.sqlite'}") as store:
        pipeline = Pipeline(tmp_path / "out", store, target, Evaluation(None, 0), force=True)
        records = {path.stem: pipeline.measure_tflite(path) for path in models}  # raises nothing
        stored = {row["candidate_name"]: row for row in store.measurements()}
    for fault, message in EXPECTED.items():
        record = records[fault]
        assert stored[fault]["status"] == record["status"]
        if message is None:
            assert record["status"] == "ok", (fault, record["error"])
            assert record["bit_exact"] is True and record["instructions"] == 32000
            assert record["flash_bytes"] == sum(record["flash_breakdown"].values())
        else:
            assert record["status"] == "failed", fault
            assert record["error"].startswith(message) and "\n" not in record["error"], record["error"]
    assert "too many" in records["too-big"]["error"]  # the linker's sizes are named
    assert len(target.sessions) == len(EXPECTED) - 1 and all(session.closed for session in target.sessions)


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not found (apt-get install qemu-system-arm)")
    return firmware.build(tmp_path_factory.mktemp("firmware") / "an547")


def test_emulator_killed_mid_inference_is_a_closed_link_and_leaves_no_process(elf):
    session = QemuSession(elf, timeout_s=5)
    session.link.load_input(b"\x01" * 16)
    os.kill(session.process.pid, signal.SIGSTOP)  # frozen: it cannot answer before it dies
    session.connection.sendall(b"infer 10 1%")
    session.process.kill()
    with pytest.raises(ProtocolError, match=r"qemu-an547: link (closed mid-reply|failed)"):
        session.link.wait_ready("infer")
    session.close()
    assert session.process.poll() is not None


def test_a_silent_emulator_times_out_in_one_line_and_is_killed(elf):
    session = QemuSession(elf, timeout_s=1)
    os.kill(session.process.pid, signal.SIGSTOP)
    with pytest.raises(ProtocolError, match=r"^qemu-an547: no reply within 1 s \(silent target\)$"):
        session.link.command("name")
    session.close()  # SIGKILL reaches a stopped process too
    assert session.process.poll() is not None
