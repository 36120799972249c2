"""Faults of serial targets, end to end: each is detected, reported in one line, stored as a failed
measurement, and the run goes on to the next model; a well-formed but wrong output is stored as not
bit-exact. The misbehaving devices are ``FaultyPeer`` test doubles (tests/faulty_peer.py); the emulator
faults use real QEMU with the real no-model firmware."""

import os
import shutil
import signal

import numpy as np
import pytest

from harness.pipeline import Evaluation, Pipeline
from results.store import Store
from targets import firmware
from targets.host_tflm import HostTFLM
from targets.qemu_an547 import QemuSession
from targets.serial_link import ProtocolError
from tests.faulty_peer import PeerTarget

pytestmark = pytest.mark.skipif(bool(firmware.missing_tools()), reason=f"{firmware.missing_tools()} "
                                "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi cmake)")

EXPECTED = {  # fault -> the one line stored for it (None: measured fine)
    "none": None,
    "split": None,
    "garbled": "peer: garbled bytes on the link",
    "silent": "peer: no reply to 'infer' within 2 s (silent target)",  # 1 s + 10 runs x 0.1 s
    "killed": "peer: link",  # closed mid-reply, or failed, as the transport reports a hang-up
    "reset": "peer: the target reset during 'infer'",
    "error": "peer: 'infer' failed on the target: Invoke failed",
    "too-big": "firmware build failed (an547): the image does not fit the DDR region",
}


@pytest.fixture(scope="module")
def peer_firmware(tmp_path_factory):
    """One build directory for the peers' no-model image, shared by this module's tests."""
    return tmp_path_factory.mktemp("peer-firmware")


def _measure_in_order(tflite: bytes, faults: dict[str, str], tmp_path, firmware_dir, transport: str = "socket"):
    """Each label measured in order by one pipeline over PeerTargets; (records, stored rows, target)."""
    target = PeerTarget(faults, firmware_dir, transport)
    with Store(f"sqlite:///{tmp_path / 'results.sqlite'}") as store:
        pipeline = Pipeline(tmp_path / "out", store, target, Evaluation(None, 0), force=True)
        records = {}
        for label in faults:
            path = tmp_path / f"{label}.tflite"
            path.write_bytes(tflite)
            records[label] = pipeline.measure_tflite(path)  # raises nothing
        stored = {row["candidate_name"]: row for row in store.measurements()}
    return records, stored, target


@pytest.mark.parametrize("transport", ["socket", "pty"])
def test_every_fault_is_a_failed_row_and_the_run_goes_on(transport, hand_tflite, tmp_path, peer_firmware):
    if transport == "pty":
        pytest.importorskip("serial", reason="pyserial drives the board's port: pip install pyserial")
    records, stored, target = _measure_in_order(hand_tflite, {fault: fault for fault in EXPECTED}, tmp_path,
                                                peer_firmware, transport)
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


# label -> (the peer's fault, the one line stored for it; None: measured fine). The hand model has 10
# outputs; a well-behaved candidate follows the malformed replies, and must still measure.
OUTPUT_FAULTS = {
    "flipped": ("flipped", None),
    "overflow": ("results-overflow", "peer: 'infer' value 200 is outside int8's -128..127"),
    "nonint": ("results-nonint", "peer: 'infer' value '2.5' is not an integer"),
    "short": ("results-short", "peer: 'infer' replied 9 values, the profile said 10"),
    "after": ("none", None),
}


def test_a_wrong_output_is_stored_not_bit_exact_and_a_malformed_one_is_a_failed_row(hand_tflite, tmp_path,
                                                                                     peer_firmware):
    """A well-formed output with one byte flipped is measured but stored bit_exact False; an m-results
    value outside int8, a non-integer one, or one value too few is a failed row of one line, and the
    next candidate in the same pipeline measures ok and bit-exact."""
    faults = {label: fault for label, (fault, _) in OUTPUT_FAULTS.items()}
    records, stored, target = _measure_in_order(hand_tflite, faults, tmp_path, peer_firmware)
    for label, (fault, message) in OUTPUT_FAULTS.items():
        record, row = records[label], stored[label]
        assert row["status"] == record["status"]
        if message is None:
            assert record["status"] == "ok", (label, record.get("error"))
            assert row["extra"]["bit_exact"] is (fault != "flipped"), label
        else:
            assert record["status"] == "failed" and row["error"] == message, (label, row["error"])
    assert len(target.sessions) == len(OUTPUT_FAULTS) and all(session.closed for session in target.sessions)


def test_each_input_is_run_as_its_own_sample(hand_tflite, tmp_path, peer_firmware):
    """``infer`` sends every sample, in order, and returns each one's own output."""
    target = PeerTarget({}, peer_firmware)
    host = HostTFLM(hand_tflite)
    inputs = np.stack([np.random.default_rng(seed).integers(-128, 128, host.input_shape[1:], dtype=np.int8)
                       for seed in range(4)])
    expected = np.stack([host.infer(sample[None]).reshape(-1) for sample in inputs])
    assert all(not np.array_equal(expected[i], expected[0]) for i in range(1, len(inputs)))  # samples tell apart
    target.prepare(hand_tflite, tmp_path, "each")
    try:
        outputs = target.infer(inputs)
        peer = target.sessions[-1].peer
    finally:
        target.close()
    np.testing.assert_array_equal(outputs, expected)
    assert peer.inputs == [sample.tobytes() for sample in inputs]  # the device saw each sample once, in order


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
    with pytest.raises(ProtocolError, match=r"^qemu-an547: no reply to 'name' within 1 s \(silent target\)$"):
        session.link.command("name")
    session.close()  # SIGKILL reaches a stopped process too
    assert session.process.poll() is not None
