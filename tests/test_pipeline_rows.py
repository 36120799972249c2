"""The rows a real Pipeline stores in a real SQLite store, and the pipeline's small helpers.

Each stored row is read back from the store and checked key by key: the candidate's meta
(strategy, float accuracy, dataset, search figures), the run it belongs to, its settings key and
where its artifacts lie. Keys and digests are recomputed here from their documented recipe
(sha256 over canonical JSON, or over each array's dtype, shape and bytes), accuracies from a
host-TFLM loop over the exported model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import resource
import select
import struct
import sys
import termios
import time

import numpy as np
import pytest

from core.candidate import Candidate, expected_weight_shapes
from core.data import Dataset, synthetic
from core.errors import UsageError
from harness.pipeline import Evaluation, Pipeline, elapsed, ensure_writable, load_candidates, progress
from results.store import Store
from targets import get_target
from targets.vela_compiler import VelaSettings, compile_model
from tests.candidates import grid_weights, make_candidate, small_spec, tflite_of

EVALUATED = 24
CALIBRATION = 16
SEARCHED = {"budget_bytes": 1234, "decisions": [{"layer": "stem", "bits": 2}], "timings_s": {"search": 1.5}}


# --- references -------------------------------------------------------------------------------------


def images_digest(*arrays: np.ndarray) -> str:
    """12 hex digits of sha256 over each array's dtype string, shape and raw bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def settings_digest(settings: dict) -> str:
    """16 hex digits of sha256 over the settings as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def expected_key(row: dict, evaluation: dict, calibration: str | None) -> str:
    """The settings key of a row measured on the default Vela target with ``row``'s tool versions."""
    settings = {"target": "vela", "settings": VelaSettings().as_dict(), "tools": row["tool_versions"],
                "evaluation": evaluation}
    if calibration is not None:
        settings["calibration"] = calibration
    return settings_digest(settings)


def no_evaluation() -> dict:
    return {"dataset": None, "samples": 0}


def noise_key(count: int, shape: tuple[int, ...]) -> str:
    """Uniform float32 noise in [0, 1) from numpy's generator seeded 0, named by source, count and digest."""
    noise = np.random.default_rng(0).random((count, *shape), dtype=np.float32)
    return f"noise-{count}-{images_digest(noise)}"


def host_accuracy(tflite: bytes, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy of the int8 model run image by image on host TFLM, and the share of class-0 predictions."""
    from tflite_micro import runtime

    from core.tflite_model import read_tflite

    tensor = read_tflite(tflite).input
    scale, zero_point = float(tensor.scales[0]), int(tensor.zero_points[0])
    interpreter = runtime.Interpreter.from_bytes(tflite)
    predictions = []
    for image in images:
        interpreter.set_input(np.clip(np.round(image / scale) + zero_point, -128, 127).astype(np.int8)[None], 0)
        interpreter.invoke()
        predictions.append(int(interpreter.get_output(0).ravel().argmax()))
    predictions = np.array(predictions)
    return float((predictions == labels).mean()), float((predictions == 0).mean())


def _candidate(spec: dict, bits: int, nonzero: float, seed: int) -> Candidate:
    rng = np.random.default_rng(seed)
    weights = {key: rng.normal(0, 0.05, shape).astype(np.float32) if key.endswith(".bias")
               else grid_weights(shape, bits, nonzero, rng) for key, shape in expected_weight_shapes(spec).items()}
    return Candidate(spec, weights)


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=256, n_test=48)


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'results.sqlite'}") as opened:
        yield opened


def _pipeline(out, store, dataset, samples=EVALUATED, calibration=CALIBRATION, allow_cpu_ops=False) -> Pipeline:
    return Pipeline(out, store, get_target("vela"), Evaluation(dataset, samples), calibration,
                    allow_cpu_ops=allow_cpu_ops)


def _stored(store, run_id) -> dict:
    [row] = store.measurements(run_id)
    return row


def _searched_candidate(bits: int, seed: int) -> Candidate:
    candidate = make_candidate(bits=bits, nonzero=0.3, seed=seed)
    candidate.spec["meta"] = {"strategy": "udc", "accuracy_float": 0.875, "dataset": "synthetic",
                              "note": "not a search figure", **SEARCHED}
    return candidate


# --- candidate rows ---------------------------------------------------------------------------------


def test_measured_candidate_row_in_the_store(dataset, tmp_path, store):
    """An ok row: the run's id, the meta's strategy, float accuracy, dataset and search figures, the settings
    key of target, tools, evaluation and calibration, accuracy on the evaluation images, b and s of the spec."""
    candidate = _searched_candidate(bits=2, seed=3)
    run_id = store.start_run("measure", {}, {})
    out = tmp_path / "out"
    returned = _pipeline(out, store, dataset).measure_candidate(candidate, run_id)
    row = _stored(store, run_id)
    assert returned["id"] == row["id"] and returned["cached"] is False
    assert (row["run_id"], row["status"], row["error"]) == (run_id, "ok", None)
    assert (row["candidate_name"], row["candidate_hash"]) == ("hand-b2-s30", candidate.content_hash)
    assert (row["strategy"], row["accuracy_float"]) == ("udc", 0.875)
    assert row["extra"]["dataset"] == "synthetic"
    assert row["extra"]["search"] == SEARCHED
    assert "note" not in row["extra"]

    calibration_images = dataset.x_train[:: 256 // CALIBRATION][:CALIBRATION]
    calibration = f"train-{CALIBRATION}-{images_digest(calibration_images)}"
    evaluation = {"dataset": "synthetic", "samples": EVALUATED,
                  "digest": images_digest(dataset.x_test[:EVALUATED], dataset.y_test[:EVALUATED])}
    assert row["settings_key"] == expected_key(row, evaluation, calibration)

    artifacts = out / "artifacts" / candidate.content_hash[:16]
    exported = artifacts / f"model_int8-{calibration}.tflite"
    assert sorted(path.name for path in artifacts.iterdir()) == sorted([exported.name, "model_vela.tflite"])
    model = exported.read_bytes()
    assert row["flash_bytes"] == compile_model(model).flash_bytes

    accuracy, zeros = host_accuracy(model, dataset.x_test[:EVALUATED], dataset.y_test[:EVALUATED])
    assert accuracy != zeros  # the labels decide the figure, not class 0
    assert (row["accuracy_int8"], row["accuracy_samples"]) == (accuracy, EVALUATED)

    # b = 2 and s = 0.3 come from the spec: the codes alone have one nonzero magnitude (+-d), i.e. 1 bit.
    h2 = -(0.3 * math.log2(0.3) + 0.7 * math.log2(0.7))
    elements = {"stem": 72, "dw": 72, "project": 64, "fc": 80}
    assert {layer["layer"]: (layer["bits"], layer["nonzero"]) for layer in row["extra"]["layers"]} == {
        name: (2, 0.3) for name in elements}
    assert row["rhs_bound_bytes"] == pytest.approx(sum(elements.values()) * (0.3 * 2 + h2) / 8)


def test_failed_candidate_row_keeps_meta_run_and_key(tmp_path, store):
    """A candidate that cannot be exported (9-bit weights) is stored as a failed row of its run, with its meta
    and the settings key of a noise calibration (no dataset)."""
    candidate = make_candidate(bits=9, nonzero=0.5, seed=1)
    candidate.spec["meta"] = {"strategy": "udc", "accuracy_float": 0.5, "dataset": "fashion-mnist", **SEARCHED}
    run_id = store.start_run("measure", {}, {})
    returned = _pipeline(tmp_path / "out", store, None, calibration=4).measure_candidate(candidate, run_id)
    row = _stored(store, run_id)
    assert returned["status"] == "failed" and returned["id"] == row["id"]
    assert (row["run_id"], row["status"]) == (run_id, "failed")
    assert "bits=9" in row["error"] and row["flash_bytes"] is None
    assert (row["candidate_name"], row["strategy"], row["accuracy_float"]) == ("hand-b9-s50", "udc", 0.5)
    assert row["extra"] == {"dataset": "fashion-mnist", "search": SEARCHED,
                            "evaluation": {**no_evaluation(), "calibration": noise_key(4, (28, 28, 1))}}
    assert row["settings_key"] == expected_key(row, no_evaluation(), noise_key(4, (28, 28, 1)))
    assert not (tmp_path / "out" / "artifacts").exists()


def test_candidate_without_meta(tmp_path, store):
    """No meta: strategy, float accuracy and dataset are empty and the row has no search figures."""
    candidate = make_candidate(bits=9, nonzero=0.5, seed=2)
    del candidate.spec["meta"]
    row = _pipeline(tmp_path / "out", store, None, calibration=4).measure_candidate(candidate)
    stored = _stored(store, None)
    assert row["id"] == stored["id"] and stored["run_id"] is None
    assert (stored["strategy"], stored["accuracy_float"], stored["status"]) == (None, None, "failed")
    assert stored["extra"] == {"dataset": None,
                               "evaluation": {**no_evaluation(), "calibration": noise_key(4, (28, 28, 1))}}


def _cpu_candidate() -> Candidate:
    """Its 5x5 stem has stride 5 with 'same' padding, which Vela leaves on the CPU."""
    spec = small_spec()
    spec["layers"][0].update(kernel=5, stride=5)
    spec["name"] = "stride5"
    return _candidate(spec, bits=4, nonzero=0.5, seed=4)


def test_candidate_with_cpu_operators(tmp_path, store):
    """Without allow_cpu_ops the row fails naming the candidate; with it the row is ok and lists the operator."""
    candidate = _cpu_candidate()
    out = tmp_path / "out"
    refused = _pipeline(out, store, None).measure_candidate(candidate)
    allowed = _pipeline(out, store, None, allow_cpu_ops=True).measure_candidate(candidate)
    assert refused["status"] == "failed"
    assert refused["error"].startswith("stride5: Vela cannot place 1 operator(s) on the NPU")
    assert allowed["status"] == "ok" and allowed["id"] != refused["id"]
    [exported] = (out / "artifacts").glob("*/model_int8-*.tflite")
    assert allowed["cpu_operators"] == compile_model(exported.read_bytes()).cpu_operators
    assert [op.split(" ")[0] for op in allowed["cpu_operators"]] == ["CONV_2D"]


# --- calibration ------------------------------------------------------------------------------------


def test_calibration_from_noise_without_a_fitting_dataset(store, tmp_path, dataset):
    """No dataset, or one of another image shape: seeded float32 noise, named noise-<count>-<digest>."""
    for source in (None, dataset):
        pipeline = _pipeline(tmp_path, store, source, calibration=5)
        images = pipeline.calibration_images((8, 8, 3))
        expected = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
        assert images.dtype == np.float32 and np.array_equal(images, expected)
        assert pipeline.calibration_key((8, 8, 3)) == noise_key(5, (8, 8, 3))


def test_calibration_from_training_images(store, tmp_path):
    """A dataset of the model's shape calibrates with every n-th training image (n = train // count, at
    least 1), named train-<count>-<digest>."""
    small = synthetic(n_train=20, n_test=4)
    pipeline = _pipeline(tmp_path, store, small, calibration=16)
    assert np.array_equal(pipeline.calibration_images((28, 28, 1)), small.x_train[:16])
    assert pipeline.calibration_key((28, 28, 1)) == f"train-16-{images_digest(small.x_train[:16])}"
    large = synthetic(n_train=100, n_test=4)
    every_sixth = _pipeline(tmp_path, store, large, calibration=16).calibration_images((28, 28, 1))
    assert np.array_equal(every_sixth, large.x_train[[6 * i for i in range(16)]])


# --- bring-your-own .tflite rows -------------------------------------------------------------------------


def test_measured_tflite_row_in_the_store(hand_tflite_file, dataset, tmp_path, store):
    """An ok row of a ready int8 model: strategy 'tflite', named after the file, artifacts under its sha256,
    settings key without calibration, accuracy on the evaluation images."""
    run_id = store.start_run("measure", {}, {})
    out = tmp_path / "out"
    _pipeline(out, store, dataset).measure_tflite(hand_tflite_file, run_id)
    row = _stored(store, run_id)
    data = hand_tflite_file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert (row["run_id"], row["status"], row["strategy"]) == (run_id, "ok", "tflite")
    assert (row["candidate_name"], row["candidate_hash"]) == ("hand", sha)
    evaluation = {"dataset": "synthetic", "samples": EVALUATED,
                  "digest": images_digest(dataset.x_test[:EVALUATED], dataset.y_test[:EVALUATED])}
    assert row["settings_key"] == expected_key(row, evaluation, None)
    assert [path.name for path in (out / "artifacts" / sha[:16]).iterdir()] == ["model_vela.tflite"]
    accuracy, zeros = host_accuracy(data, dataset.x_test[:EVALUATED], dataset.y_test[:EVALUATED])
    assert accuracy != zeros
    assert (row["accuracy_int8"], row["accuracy_samples"]) == (accuracy, EVALUATED)
    # No spec: b comes from the codes, a 4-bit grid with 15 levels.
    assert {layer["bits"] for layer in row["extra"]["layers"]} == {4}


def test_tflite_input_that_does_not_fit_the_dataset(hand_tflite_file, tmp_path, store):
    """A one-line UsageError naming the file, both shapes and the dataset; nothing is stored."""
    rng = np.random.default_rng(0)
    colour = Dataset("colour", rng.random((4, 16, 16, 3), dtype=np.float32), np.zeros(4, np.int64),
                     rng.random((4, 16, 16, 3), dtype=np.float32), np.zeros(4, np.int64), 10)
    with pytest.raises(UsageError) as caught:
        _pipeline(tmp_path, store, colour).measure_tflite(hand_tflite_file)
    message = str(caught.value)
    assert message == (f"{hand_tflite_file}: model input (28, 28, 1) does not fit colour images (16, 16, 3); "
                       "pass the dataset the model was trained on, or none")
    assert store.measurements() == []


def test_float_tflite_is_refused_naming_the_file(tmp_path, store):
    import tensorflow as tf

    path = tmp_path / "float.tflite"
    path.write_bytes(tflite_of(lambda x: tf.nn.relu(x), (1, 4, 4, 2), int8=False))
    with pytest.raises(UsageError, match=r"not int8") as caught:
        _pipeline(tmp_path, store, None).measure_tflite(path)
    assert str(caught.value).startswith(f"{path}: input is FLOAT32")


def test_tflite_with_cpu_operators(tmp_path, store):
    """A SQRT left on the CPU: a failed row of the run with the plain settings key, or, with allow_cpu_ops,
    an ok row."""
    import tensorflow as tf

    path = tmp_path / "sqrt.tflite"
    path.write_bytes(tflite_of(lambda x: tf.math.sqrt(x), (1, 8, 8, 4)))
    run_id = store.start_run("measure", {}, {})
    _pipeline(tmp_path / "out", store, None).measure_tflite(path, run_id)
    failed = _stored(store, run_id)
    assert (failed["run_id"], failed["status"], failed["strategy"]) == (run_id, "failed", "tflite")
    assert failed["error"].startswith("sqrt: Vela cannot place 1 operator(s)")
    assert failed["settings_key"] == expected_key(failed, no_evaluation(), None)
    allowed = _pipeline(tmp_path / "out", store, None, allow_cpu_ops=True).measure_tflite(path)
    assert allowed["status"] == "ok" and [op.split(" ")[0] for op in allowed["cpu_operators"]] == ["SQRT"]


# --- loading candidates ---------------------------------------------------------------------------------


def test_load_candidates_from_a_directory_of_candidates(tmp_path):
    """Subdirectories with spec.json, in name order; other subdirectories and files are skipped."""
    first, second, single = (make_candidate(seed=seed) for seed in (1, 2, 3))
    parent = tmp_path / "searched"
    second.save(parent / "b-second")
    first.save(parent / "a-first")
    (parent / "c-notes").mkdir()
    (parent / "c-notes" / "readme.txt").write_text("no candidate here")
    (parent / "summary.json").write_text("{}")
    single.save(tmp_path / "single")
    found = load_candidates([tmp_path / "single", parent])
    assert [c.content_hash for c in found] == [single.content_hash, first.content_hash, second.content_hash]


@pytest.mark.parametrize("make", ["empty", "without-candidates", "missing"])
def test_load_candidates_refuses_a_directory_without_any(tmp_path, make):
    path = tmp_path / "nothing"
    if make != "missing":
        path.mkdir()
    if make == "without-candidates":
        (path / "sub").mkdir()
        (path / "sub" / "weights.npz").write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        load_candidates([path])
    assert str(caught.value) == f"{path}: not a candidate directory (no spec.json in it or its subdirectories)"


# --- output directory, progress, elapsed time -----------------------------------------------------------------


def test_ensure_writable_makes_nested_directories(tmp_path):
    """Missing parents are made; the probe file is gone afterwards."""
    out = tmp_path / "a" / "b" / "out"
    assert ensure_writable(out) == out
    assert out.is_dir() and list(out.iterdir()) == []


def test_ensure_writable_probe_writes_no_data(tmp_path):
    """The probe is an empty file: a process allowed to create files but not to grow them (a file-size
    limit of 0 bytes) still gets its directory."""
    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        result = ensure_writable(out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result == out and list(out.iterdir()) == []


@pytest.fixture
def terminal(monkeypatch):
    """A real pseudo-terminal, 60 columns wide; yields (attach, set_width, read_all). ``attach`` puts
    sys.stderr on it, inside the test (pytest's own capture sets sys.stderr again between setup and call)."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")

    def attach() -> None:
        monkeypatch.setattr(sys, "stderr", stream)

    def set_width(columns: int) -> None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

    def read_all() -> str:
        stream.flush()
        data = b""
        while select.select([master], [], [], 0.2)[0]:
            data += os.read(master, 65536)
        return data.decode()

    set_width(60)
    yield attach, set_width, read_all
    monkeypatch.undo()
    stream.close()
    os.close(master)


def _lines(text: str) -> list[str]:
    return [part for part in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if part]


def test_progress_on_a_terminal(terminal):
    """Not quiet, on a terminal: a bar on stderr with the description, the given total and 'model' as unit,
    which follows the terminal's width when it changes."""
    attach, set_width, read_all = terminal
    attach()

    def models():  # a generator: its length is only known from the total
        yield "a"
        set_width(100)
        yield "b"
        yield "c"

    assert list(progress(models(), 3, "measure", quiet=False)) == ["a", "b", "c"]
    lines = _lines(read_all())
    assert lines[0].startswith("measure:   0%") and "0/3" in lines[0] and len(lines[0]) <= 60
    assert lines[-1].startswith("measure: 100%") and "3/3" in lines[-1] and "model/s]" in lines[-1]
    assert 60 < len(lines[-1]) <= 100


def test_progress_quiet_writes_nothing(terminal):
    attach, _, read_all = terminal
    attach()
    assert list(progress(iter(range(4)), 4, "measure", quiet=True)) == [0, 1, 2, 3]
    assert read_all() == ""


def test_progress_not_on_a_terminal_writes_nothing(capsys):
    """Not quiet but stderr is a file or pipe (a CI log): no bar either."""
    assert list(progress(iter(range(2)), 2, "measure", quiet=False)) == [0, 1]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("seconds, text", [(0.0, "0.0 s"), (30.0, "30.0 s"), (600.0, "10.0 min")])
def test_elapsed_on_the_real_clock(seconds, text):
    assert elapsed(time.perf_counter() - seconds) == text


@pytest.mark.parametrize("seconds, text", [(89.9, "89.9 s"), (90.0, "1.5 min")])
def test_elapsed_switches_to_minutes_at_90_seconds(monkeypatch, seconds, text):
    """Seconds below 90, minutes from exactly 90 on; a fixed clock (a stand-in: the real one never reads
    exactly 90 s later) makes the boundary exact."""
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + seconds)
    assert elapsed(1000.0) == text
