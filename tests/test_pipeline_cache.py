"""The measurement cache on the real Vela target: what is a cache hit and what is measured again.

A measurement is reused only when the candidate, the target and its settings, the evaluation
images and the calibration images are all unchanged; an exported int8 model only with the same
calibration. Expected figures come from Vela run directly on the exported model, and expected
quantisation scales from the calibration images by hand.
"""

from dataclasses import replace

import numpy as np
import pytest

from core.data import synthetic
from core.errors import UsageError
from core.tflite_model import read_tflite
from harness.pipeline import Evaluation, Pipeline
from results.store import Store
from targets import get_target
from targets.vela_compiler import VelaSettings, compile_model
from tests.candidates import make_candidate

CALIBRATION = 16


@pytest.fixture(scope="module")
def candidate():
    return make_candidate(bits=4, nonzero=0.5, seed=11)


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=256, n_test=48)


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    """One artifact directory for the tests that change no calibration: each exports nothing new."""
    return tmp_path_factory.mktemp("shared-out")


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'results.sqlite'}") as opened:
        yield opened


def _pipeline(out, store, dataset, samples=32, calibration=CALIBRATION, force=False, **vela) -> Pipeline:
    return Pipeline(out, store, get_target("vela", **vela), Evaluation(dataset, samples), calibration, force=force)


def _exported(out):
    """The one int8 model exported under ``out``."""
    found = sorted(out.glob("artifacts/*/model_int8*.tflite"))
    assert len(found) == 1, found
    return found[0]


def test_same_settings_are_a_cache_hit(candidate, dataset, shared_out, store):
    """A second pipeline with the same settings (a resumed run) returns the stored row, exports nothing."""
    first = _pipeline(shared_out, store, dataset).measure_candidate(candidate)
    exported = _exported(shared_out)
    stamp = exported.stat().st_mtime_ns
    again = _pipeline(shared_out, store, dataset).measure_candidate(candidate)
    assert first["cached"] is False and first["status"] == "ok"
    assert again["cached"] is True and again["id"] == first["id"]
    assert again["npu_cycles"] == first["npu_cycles"] and again["flash_bytes"] == first["flash_bytes"]
    assert len(store.measurements()) == 1
    assert exported.stat().st_mtime_ns == stamp


def test_more_macs_is_a_new_measurement_with_fewer_cycles(candidate, dataset, shared_out, store):
    """ethos-u55-256 is not served from ethos-u55-32: its row has Vela's cycles for 256 MACs."""
    small = _pipeline(shared_out, store, dataset, accelerator="ethos-u55-32").measure_candidate(candidate)
    large = _pipeline(shared_out, store, dataset, accelerator="ethos-u55-256").measure_candidate(candidate)
    model = _exported(shared_out).read_bytes()
    assert large["cached"] is False and large["id"] != small["id"]
    assert len(store.measurements()) == 2
    assert small["npu_cycles"] == compile_model(model, VelaSettings(accelerator="ethos-u55-32")).npu_cycles
    assert large["npu_cycles"] == compile_model(model, VelaSettings(accelerator="ethos-u55-256")).npu_cycles
    assert large["npu_cycles"] < small["npu_cycles"]


@pytest.mark.parametrize("change", [
    {"system_config": "Ethos_U55_Deep_Embedded"},
    {"memory_mode": "Sram_Only"},
    {"optimise": "Size"},
])
def test_changed_vela_setting_is_a_new_measurement(candidate, dataset, shared_out, store, change):
    """Each Vela setting besides the accelerator is part of the key; the new row has Vela's figures for it."""
    default = _pipeline(shared_out, store, dataset).measure_candidate(candidate)
    changed = _pipeline(shared_out, store, dataset, **change).measure_candidate(candidate)
    assert changed["cached"] is False and changed["id"] != default["id"]
    assert changed["target_settings"] == {**VelaSettings().as_dict(), **change}
    expected = compile_model(_exported(shared_out).read_bytes(), replace(VelaSettings(), **change))
    assert (changed["npu_cycles"], changed["total_cycles"], changed["sram_bytes"]) == (
        expected.npu_cycles, expected.total_cycles, expected.sram_bytes)
    assert (changed["npu_cycles"], changed["total_cycles"], changed["sram_bytes"]) != (
        default["npu_cycles"], default["total_cycles"], default["sram_bytes"])


def test_more_evaluation_samples_is_a_new_measurement(candidate, dataset, shared_out, store):
    """Accuracy on 48 test images is not served from the one on 24."""
    fewer = _pipeline(shared_out, store, dataset, samples=24).measure_candidate(candidate)
    more = _pipeline(shared_out, store, dataset, samples=0).measure_candidate(candidate)
    assert (fewer["cached"], more["cached"]) == (False, False) and more["id"] != fewer["id"]
    assert (fewer["accuracy_samples"], more["accuracy_samples"]) == (24, 48)


def test_other_evaluation_dataset_is_a_new_measurement(candidate, dataset, shared_out, store):
    """Another dataset name, or the same name with other test images, is measured again.

    The training images stay the same, so the calibration (and the exported model) does not change.
    """
    first = _pipeline(shared_out, store, dataset).measure_candidate(candidate)
    renamed = _pipeline(shared_out, store, replace(dataset, name="synthetic-copy")).measure_candidate(candidate)
    edited = replace(dataset, y_test=(dataset.y_test + 1) % dataset.num_classes)
    relabelled = _pipeline(shared_out, store, edited).measure_candidate(candidate)
    assert [row["cached"] for row in (first, renamed, relabelled)] == [False, False, False]
    assert len({first["id"], renamed["id"], relabelled["id"]}) == 3
    assert len(list(shared_out.glob("artifacts/*/model_int8*.tflite"))) == 1


def _input_scales(out) -> dict:
    """Each int8 model exported under ``out``, with the scale of its input tensor."""
    return {path: float(read_tflite(path.read_bytes()).input.scales[0])
            for path in out.glob("artifacts/*/model_int8*.tflite")}


def _scale_of(images: np.ndarray) -> float:
    """The int8 input scale calibrating on images in [0, max] gives: the range [0, max] over 255 steps."""
    assert images.min() >= 0
    return float(images.max()) / 255


def test_changed_calibration_count_exports_and_measures_again(candidate, dataset, tmp_path, store):
    """calibration_samples 4 -> 64: a new row from a newly exported model; the old export stays as it was."""
    # Brightness rises with the image index, so the brightest calibration image depends on the count.
    ramp = replace(dataset, x_train=dataset.x_train * np.linspace(0.1, 1.0, 256, dtype=np.float32)[:, None, None, None])
    # Each pipeline calibrates on every (256 // n)-th training image.
    expected = {count: _scale_of(ramp.x_train[:: 256 // count][:count]) for count in (4, 64)}
    assert expected[4] < expected[64] * 0.9
    out = tmp_path / "out"
    few = _pipeline(out, store, ramp, calibration=4).measure_candidate(candidate)
    [(old_path, old_scale)] = _input_scales(out).items()
    old_model, old_stamp = old_path.read_bytes(), old_path.stat().st_mtime_ns
    assert old_scale == pytest.approx(expected[4], rel=1e-4)
    many = _pipeline(out, store, ramp, calibration=64).measure_candidate(candidate)
    assert many["cached"] is False and many["id"] != few["id"]
    scales = _input_scales(out)
    new = [path for path, scale in scales.items() if scale == pytest.approx(expected[64], rel=1e-4)]
    assert len(new) == 1, f"no model exported with the 64 calibration images: {scales}"
    assert sorted(scales) == sorted([old_path, new[0]])
    assert old_path.read_bytes() == old_model and old_path.stat().st_mtime_ns == old_stamp
    # The row is the new model's: Vela on the new export gives its figures.
    assert many["npu_cycles"] == compile_model(new[0].read_bytes()).npu_cycles


def test_other_calibration_images_export_and_measure_again(candidate, dataset, tmp_path, store):
    """Same count, same test images, training images at half the brightness: the input scale halves."""
    out = tmp_path / "out"
    bright = _pipeline(out, store, dataset).measure_candidate(candidate)
    dim_dataset = replace(dataset, x_train=dataset.x_train * np.float32(0.5))
    dim = _pipeline(out, store, dim_dataset).measure_candidate(candidate)
    assert dim["cached"] is False and dim["id"] != bright["id"]
    step = 256 // CALIBRATION
    expected = sorted(_scale_of(x[::step][:CALIBRATION]) for x in (dataset.x_train, dim_dataset.x_train))
    assert expected[0] == pytest.approx(expected[1] / 2)
    assert sorted(_input_scales(out).values()) == pytest.approx(expected, rel=1e-4)


def test_calibration_does_not_touch_a_ready_tflite(hand_tflite_file, tmp_path, store):
    """A bring-your-own int8 model is not exported, so another calibration is still a cache hit."""
    first = _pipeline(tmp_path / "out", store, None, calibration=4).measure_tflite(hand_tflite_file)
    again = _pipeline(tmp_path / "out", store, None, calibration=64).measure_tflite(hand_tflite_file)
    assert first["cached"] is False and again["cached"] is True and again["id"] == first["id"]


def test_force_measures_and_exports_again(candidate, dataset, shared_out, store):
    """force=True skips the stored row and the exported model: a new row every time."""
    ordinary = _pipeline(shared_out, store, dataset).measure_candidate(candidate)
    exported = _exported(shared_out)
    stamp = exported.stat().st_mtime_ns
    forced = _pipeline(shared_out, store, dataset, force=True).measure_candidate(candidate)
    assert forced["cached"] is False and forced["id"] != ordinary["id"]
    assert len(store.measurements()) == 2
    assert exported.stat().st_mtime_ns != stamp
    assert forced["npu_cycles"] == ordinary["npu_cycles"]


def test_calibration_needs_an_image(dataset, tmp_path, store):
    with pytest.raises(UsageError, match="calibration_samples to 1 or more"):
        _pipeline(tmp_path, store, dataset, calibration=0)
