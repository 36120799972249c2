"""``--target mlperf-dut``: a device flashed with MLPerf Tiny's reference firmware, measured as MLPerf
Tiny's runner measures it. The device is ``tests.reference_dut.ReferenceDut``, a test double playing the
reference firmware byte for byte (no board is attached here); our own firmware on QEMU is measured the
same way in ``test_mlperf_dut_qemu.py``."""

import json

import numpy as np
import pytest

from core.tflite_model import read_tflite
from harness.cli import main
from harness.measure import quantize_inputs
from targets.mlperf_dut import MLPerfDutTarget
from targets.mlperf_models import UINT8_SHIFTED, encode_input
from tests.reference_dut import ReferenceDut


@pytest.fixture(scope="module")
def kws_tflite():
    """A keyword-spotting-shaped int8 model: 49x10 features in, 12 softmax scores out, as kws01's."""
    import tensorflow as tf

    from tests.candidates import tflite_of

    weights = tf.constant(np.random.default_rng(0).normal(0, 0.1, (490, 12)).astype(np.float32))
    return tflite_of(lambda x: tf.nn.softmax(tf.matmul(tf.reshape(x, [1, 490]), weights)), (1, 49, 10, 1))


def measure(args, capsys, tmp_path):
    code = main(["measure", "--target", "mlperf-dut", "--json", "--out", str(tmp_path / "out"), *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.strip()], captured.err


def test_a_reference_device_is_measured_without_a_model_file_in_the_runners_windows(kws_tflite, capsys, tmp_path):
    device = ReferenceDut(kws_tflite, model_id="kws01", inference_us=2500)
    code, rows, err = measure(["--port", device.url], capsys, tmp_path)
    assert code == 0, err
    row = rows[0]
    assert row["status"] == "ok" and row["mlperf_model_id"] == "kws01" and row["device_name"] == "unspecified"
    assert row["latency_s"] == pytest.approx(2500e-6) and row["latency_is_estimate"] is False
    windows = row["mlperf_windows"]  # the runner's kws01 script: 5 windows of 'infer 70 10'
    assert len(windows) == 5 and {(w["runs"], w["warmups"]) for w in windows} == {(70, 10)}
    assert all(w["elapsed_us"] == 70 * 2500 and w["meets_min_window"] is False for w in windows)
    assert row["windows_meet_min"] is False and row["throughput_per_s"] == pytest.approx(400.0)
    # every command fits the reference's 80-character buffer: 31-byte chunks, as the runner sends
    assert max(len(command) for command in device.commands) <= 80
    assert sum(command.startswith("db ") and command != "db load 490" for command in device.commands) == 5 * 16


def test_accuracy_on_a_reference_device_equals_host_tflm_on_the_same_inputs(hand_tflite, hand_tflite_file, capsys,
                                                                          tmp_path):
    device = ReferenceDut(hand_tflite, model_id="ic01")
    code, rows, err = measure(["--port", device.url, "--tflite", str(hand_tflite_file), "--dataset", "synthetic",
                               "--eval-samples", "12"], capsys, tmp_path)
    assert code == 0, err
    row = rows[0]
    assert row["candidate"] == "hand" and row["accuracy_samples"] == 12
    from core.data import load_dataset
    from targets.host_tflm import HostTFLM

    images, labels = load_dataset("synthetic").x_test[:12], load_dataset("synthetic").y_test[:12]
    inputs = quantize_inputs(images, read_tflite(hand_tflite).input)
    expected = HostTFLM(hand_tflite).infer(inputs).reshape(12, -1).argmax(axis=1)
    assert row["accuracy_int8"] == pytest.approx(float((expected == labels).mean()))
    # the ic01 device was sent uint8 = int8 + 128 and ran exactly the int8 inputs
    ran = [np.frombuffer(data, np.int8) for data in device.inputs[-12:]]
    np.testing.assert_array_equal(np.stack(ran), inputs.reshape(12, -1))


def test_the_runners_input_rule_shifts_int8_by_128_for_image_models():
    sample = np.array([-128, -1, 0, 127], np.int8)
    assert encode_input(sample, UINT8_SHIFTED) == bytes([0, 127, 128, 255])
    assert encode_input(sample, "int8") == sample.tobytes()


def test_a_pty_device_and_a_wrapping_32_bit_clock(kws_tflite, tmp_path):
    device = ReferenceDut(kws_tflite, model_id="kws01", transport="pty", inference_us=1000,
                          clock_start_us=(1 << 32) - 30_000)
    target = MLPerfDutTarget(port=device.url, windows=2, runs=50, warmups=0, timeout_s=5.0)
    try:
        assert target.tool_versions()["device_model"] == "kws01"
        target.prepare(kws_tflite, tmp_path, "kws")
        figures = target.counters()  # the first window's T1 wraps past 2**32 microseconds
    finally:
        target.close()
        device.close()
    assert [w["elapsed_us"] for w in figures["mlperf_windows"]] == [50_000, 50_000]


def test_a_short_input_the_device_logs_is_one_error_not_a_result_of_stale_data(kws_tflite, tmp_path):
    device = ReferenceDut(kws_tflite, model_id="kws01")
    target = MLPerfDutTarget(port=device.url, windows=1, runs=1, warmups=0, timeout_s=5.0)
    try:
        target.prepare(None, tmp_path, "kws")
        target._input_bytes = 400  # the device expects 490: it prints "Input db has 400 elemented, expected 490"
        with pytest.raises(Exception, match=r"'infer': the device did not take the input: 'Input db has 400"):
            target.counters()
        assert any(line.startswith("Input db has") for line in target._link.log)
    finally:
        target.close()


@pytest.mark.parametrize("argv,message", [
    (["--port", "socket://127.0.0.1:notaport"], "cannot read the port"),
    (["--port", "/dev/no-such-tty"], "serial port /dev/no-such-tty does not exist"),
    ([], "no port: pass --port"),
])
def test_bad_ports_are_one_line_errors(argv, message, capsys, tmp_path):
    code, rows, err = measure(argv, capsys, tmp_path)
    assert code != 0 and rows == []
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_candidate_cannot_be_measured_on_a_device_that_holds_its_own_model(capsys, tmp_path):
    code, _, err = measure(["--port", "socket://127.0.0.1:1", "--candidate", str(tmp_path)], capsys, tmp_path)
    assert code == 2 and "measures the model already on the device" in err


def test_mlperf_dataset_writes_the_runners_format_in_the_model_ids_input_format(capsys, tmp_path):
    """y_labels.csv rows (file, classes, class) and each sample's bytes as the runner sends them: for ic01 the
    8-bit pixels (int8 + 128), for kws01 the int8 codes."""
    import csv

    from core.data import load_dataset
    from harness.measure import pixel_codes

    data = load_dataset("synthetic")
    for model_id, expected in (("ic01", lambda codes: (codes.astype(np.int16) + 128).astype(np.uint8).tobytes()),
                               ("kws01", lambda codes: codes.tobytes())):
        assert main(["mlperf-dataset", "--dataset", "synthetic", "--model-id", model_id, "--samples", "3",
                     "--out", str(tmp_path)]) == 0
        assert f"3 synthetic test images for model id {model_id}" in capsys.readouterr().out
        rows = list(csv.reader(open(tmp_path / model_id / "y_labels.csv")))
        assert [row[1:] for row in rows] == [[str(data.num_classes), str(label)] for label in data.y_test[:3]]
        for row, image in zip(rows, data.x_test[:3]):
            assert (tmp_path / model_id / row[0]).read_bytes() == expected(pixel_codes(image))
    assert main(["mlperf-dataset", "--dataset", "synthetic", "--samples", "-1", "--out", str(tmp_path)]) == 2
    assert "--samples -1" in capsys.readouterr().err


def test_measure_quiet_prints_nothing_for_a_good_measurement(kws_tflite, capsys, tmp_path):
    device = ReferenceDut(kws_tflite, model_id="kws01")
    assert main(["measure", "--target", "mlperf-dut", "--port", device.url, "--quiet", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


def test_a_device_announcing_another_input_size_than_the_named_model_is_refused(hand_tflite, tmp_path):
    """Our firmware announces its input size (m-input-bytes); a --tflite that takes another is the wrong model."""
    target = MLPerfDutTarget(port="socket://127.0.0.1:1")
    target._identity = {"name": "udc-harness an547", "model": "ic01", "input_format": "uint8-shifted",
                        "input_bytes": 196}  # what 'profile' of a device holding a 14x14 model says
    with pytest.raises(Exception, match=r"^hand: the model takes 784 input bytes but the device's model 'ic01' takes "
                                        r"196; is the device flashed with this model\?$"):
        target.prepare(hand_tflite, tmp_path, "hand")
