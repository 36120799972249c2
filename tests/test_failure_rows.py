"""A model that breaks native code, or a bug anywhere in a measurement, is a failed row with one line,
never the end of the run. A failure the model itself causes is kept on resume (``--retry-failed``
measures it again); an unexpected exception keeps its traceback in a log file under the output
directory, shown on the terminal only with ``--debug``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from core.supervised import NativeCrash, worker
from harness.cli import main
from harness.pipeline import Evaluation, Pipeline
from results.store import Store
from targets import host_tflm
from targets.host_tflm import HostTFLM
from targets.vela import VelaTarget
from tests.candidates import make_candidate, tflite_of
from tests.fuzz_runner import mutant

SEGFAULTS_VELA = 2014  # a seed of tests/fuzz_runner.py whose mutant of the hand model makes Vela's compiler segfault


def _measure(capsys, *argv) -> tuple[int, list[dict], str]:
    capsys.readouterr()  # what the test printed before (the TF converter does) is not the command's
    code = main(["measure", "--target", "vela", "--json", *map(str, argv)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_a_vela_segfault_is_a_failed_row_kept_on_resume(capsys, tmp_path, hand_tflite):
    model = tmp_path / "broken.tflite"
    model.write_bytes(mutant(hand_tflite, SEGFAULTS_VELA))
    out = tmp_path / "out"
    code, rows, _ = _measure(capsys, "--tflite", model, "--out", out)
    assert code == 1 and rows[0]["status"] == "failed" and not rows[0]["cached"]
    assert rows[0]["error"].startswith("Vela compiler crashed (SIGSEGV) while compiling broken")
    assert (out / "artifacts" / rows[0]["candidate_hash"][:16] / "vela.log").is_file()
    code, rows, _ = _measure(capsys, "--tflite", model, "--out", out)  # resumed: the failure is the model's
    assert code == 1 and rows[0]["cached"] and rows[0]["status"] == "failed"
    code, rows, _ = _measure(capsys, "--tflite", model, "--out", out, "--retry-failed")
    assert code == 1 and not rows[0]["cached"]
    with Store.for_output_dir(out) as store:
        assert len(store.measurements()) == 2


def test_a_transient_failure_is_measured_again(tmp_path, hand_tflite_file):
    with Store.for_output_dir(tmp_path) as store:
        pipeline = Pipeline(tmp_path, store, VelaTarget(), Evaluation(None, 0))
        hash_ = __import__("hashlib").sha256(hand_tflite_file.read_bytes()).hexdigest()
        store.add_measurement(None, {"status": "failed", "error": "link lost", "candidate_hash": hash_,
                                     "candidate_name": "hand", "target": "vela", "settings_key": pipeline.settings_key})
        row = pipeline.measure_tflite(hand_tflite_file)
        assert row["status"] == "ok" and not row["cached"]


def _tiny_logits(x):
    import tensorflow as tf

    return tf.nn.softmax(x * 1e-7)


@pytest.fixture(scope="module")
def collapsed_softmax() -> bytes:
    """A real model TFLM aborts on: its SOFTMAX input's range is 1e-7 wide, scale below 2^-26."""
    return tflite_of(_tiny_logits, (1, 10))


def test_host_tflm_aborts_on_a_collapsed_softmax_and_is_told_why(collapsed_softmax, tmp_path):
    with pytest.raises(NativeCrash, match=r"^host TFLM aborted \(SIGABRT\) while loading tiny$"):
        worker(host_tflm.WORKER).call(host_tflm._load, "digest", collapsed_softmax, label="tiny", doing="loading")
    with pytest.raises(ModelError, match=r"^tiny: TFLM cannot run its SOFTMAX \(it aborts\): the input .* has scale "):
        HostTFLM(collapsed_softmax, label="tiny")
    wider = tflite_of(lambda x: __import__("tensorflow").nn.softmax(x), (1, 10))  # the same with a normal range
    assert HostTFLM(wider, label="normal").infer(np.zeros((2, 10), np.int8)).shape == (2, 10)


class FaultInjectingTarget(VelaTarget):
    """Test double: the real vela target with a bug injected into its counters for one candidate."""

    def __init__(self, broken_label: str):
        super().__init__()
        self.broken_label, self.label = broken_label, None

    def prepare(self, tflite, workdir, label):
        self.label = label
        super().prepare(tflite, workdir, label)

    def counters(self):
        if self.label == self.broken_label:
            return {"flash_bytes": 1 // 0}
        return super().counters()


def test_an_unexpected_exception_is_a_row_with_its_traceback_in_a_log(tmp_path, caplog):
    broken, fine = make_candidate(seed=1), make_candidate(seed=2)
    broken.spec["name"], fine.spec["name"] = "broken", "fine"
    with Store.for_output_dir(tmp_path) as store:
        pipeline = Pipeline(tmp_path, store, FaultInjectingTarget("broken"), Evaluation(None, 0))
        with caplog.at_level("DEBUG", logger="harness"):
            rows = [pipeline.measure_candidate(broken), pipeline.measure_candidate(fine)]
    assert rows[0]["status"] == "failed" and rows[1]["status"] == "ok"
    assert rows[0]["error"].startswith("broken: unexpected ZeroDivisionError: integer division or modulo by zero")
    log = Path(rows[0]["log"])
    assert log.parent == tmp_path / "logs" and "1 // 0" in log.read_text()
    assert "1 // 0" in caplog.text  # what --debug prints
    assert not rows[0].get("model_failure")  # a bug is retried on resume


def _mobilenet_v2(batchnorm_of_data: bool) -> bytes:
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    images = np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32)
    if batchnorm_of_data:  # BatchNorm statistics of the images, as any trained model has (weights unchanged)
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = 0.0
        model.compile(optimizer=tf.keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        model.fit(images, np.zeros(64), batch_size=64, epochs=1, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(10))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.slow
def test_stock_mobilenet_v2_is_one_line_and_measurable_with_batchnorm_of_its_data(capsys, tmp_path):
    stock, matched = tmp_path / "stock.tflite", tmp_path / "matched.tflite"
    stock.write_bytes(_mobilenet_v2(batchnorm_of_data=False))
    matched.write_bytes(_mobilenet_v2(batchnorm_of_data=True))
    code, rows, _ = _measure(capsys, "--tflite", stock, "--out", tmp_path / "out")
    assert code == 1 and rows[0]["error"].startswith("stock: TFLM cannot run its SOFTMAX (it aborts)")
    code, rows, _ = _measure(capsys, "--tflite", matched, "--out", tmp_path / "out")
    assert code == 0 and rows[0]["flash_bytes"] > 400_000 and rows[0]["tflm_arena_bytes"] > 0
