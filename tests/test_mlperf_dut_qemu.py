"""Our firmware measured as an MLPerf Tiny device: ``--target mlperf-dut`` on QEMU's UART (``unix://``),
with no model file, and with ``--tflite`` for accuracy, against host TFLM. Needs a TFLM checkout with its
Cortex-M55 library (TFLM_ROOT); skips with the reason otherwise (as in CI)."""

import json
import shutil
import time

import pytest

from core.tflite_model import read_tflite
from harness.cli import main
from harness.measure import quantize_inputs
from targets.host_tflm import HostTFLM
from targets.qemu_an547 import QemuAn547Target, _private_folder, qemu_command
from targets.serial_target import ARENA_MARGIN_BYTES
from targets.sessions import ProcessSession

TARGET = QemuAn547Target()
pytestmark = pytest.mark.skipif(TARGET.available() is not None, reason=f"qemu-an547: {TARGET.available()}")


@pytest.fixture(scope="module")
def image(hand_tflite, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mlperf-image")
    return TARGET.build_image(hand_tflite, workdir, "hand", HostTFLM(hand_tflite).arena_bytes() + ARENA_MARGIN_BYTES)


@pytest.fixture
def device(image):
    """QEMU running the image, its UART a Unix socket waiting for the first connection."""
    folder = _private_folder()
    session = ProcessSession(qemu_command(image, folder / "uart0.sock", TARGET.model_slot))
    deadline = time.monotonic() + 20
    while not (folder / "uart0.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"unix://{folder / 'uart0.sock'}"
    session.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_our_firmware_is_an_mlperf_device_measured_without_a_model_file(device, hand_tflite, hand_tflite_file,
                                                                       capsys, tmp_path):
    assert main(["measure", "--target", "mlperf-dut", "--port", device, "--tflite", str(hand_tflite_file),
                 "--dataset", "synthetic", "--eval-samples", "16", "--json", "--out", str(tmp_path / "out")]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["status"] == "ok" and row["mlperf_model_id"] == "ic01" and row["device_name"] == "udc-harness an547"
    windows = row["mlperf_windows"]  # ic01: the runner's 5 windows of 'infer 20 5'
    assert len(windows) == 5 and {(w["runs"], w["warmups"]) for w in windows} == {(20, 5)}
    assert row["latency_s"] > 0 and row["instructions"] > 0
    # SysTick under -icount is deterministic: every window lasts the same virtual time (to the microsecond the
    # two truncated timestamps can differ by)
    spans = [w["elapsed_us"] for w in windows]
    assert max(spans) - min(spans) <= 1 and row["latency_s"] == pytest.approx(spans[0] / 20e6, abs=1e-7)
    from core.data import load_dataset

    data = load_dataset("synthetic")
    inputs = quantize_inputs(data.x_test[:16], read_tflite(hand_tflite).input)
    expected = HostTFLM(hand_tflite).infer(inputs).reshape(16, -1).argmax(axis=1)
    assert row["accuracy_int8"] == pytest.approx(float((expected == data.y_test[:16]).mean()))
