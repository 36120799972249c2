"""What one measurement record holds besides the size figures: the refusal of CPU operators, the
candidate's b and s in the figures, when accuracy is (not) computed, the time taken, and the range
coding of awkward masks. Real Vela and host TFLM throughout; expectations come from Vela run
directly, hand formulas and an own range coding that is decoded back.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from core.errors import HarnessError
from core.size_model import range_coded_mask_bits
from core.tflite_model import read_tflite
from harness.export import to_int8_tflite
from harness.measure import measure_model
from targets import get_target
from targets.vela_compiler import compile_model
from tests.candidates import make_candidate, tflite_of

HEADER_BITS = 64


def test_cpu_operators_refused_naming_the_first_three(tmp_path):
    """Four square roots Vela leaves on the CPU: the message counts all four and names the first three."""
    import tensorflow as tf

    model = tflite_of(lambda x: tf.math.sqrt(tf.math.sqrt(tf.math.sqrt(tf.math.sqrt(x + 1.0)))), (1, 4, 4, 2))
    operators = compile_model(model).cpu_operators
    assert len(operators) == 4 and all(op.startswith("SQRT") for op in operators)
    with pytest.raises(HarnessError) as caught:
        measure_model(model, read_tflite(model), get_target("vela"), tmp_path, "roots")
    assert str(caught.value) == (
        "roots: Vela cannot place 4 operator(s) on the NPU, they would run on the CPU: "
        f"{operators[0]}; {operators[1]}; {operators[2]}; replace them with NPU-supported operators or pass "
        "--allow-cpu-ops")


@pytest.fixture(scope="module")
def two_bit(calibration):
    """A 2-bit candidate at s = 0.3: its codes have one nonzero magnitude (+-d), which alone would say 1 bit."""
    candidate = make_candidate(bits=2, nonzero=0.3, seed=3)
    return candidate, to_int8_tflite(candidate, calibration)


def test_record_takes_b_and_s_from_the_candidate(two_bit, tmp_path):
    candidate, tflite = two_bit
    record = measure_model(tflite, read_tflite(tflite), get_target("vela"), tmp_path, "two-bit", candidate)
    elements = {"stem": 72, "dw": 72, "project": 64, "fc": 80}
    assert {layer["layer"]: (layer["elements"], layer["bits"], layer["nonzero"]) for layer in record["layers"]} == {
        name: (count, 2, 0.3) for name, count in elements.items()}
    h2 = -(0.3 * math.log2(0.3) + 0.7 * math.log2(0.7))
    assert record["rhs_bound_bytes"] == pytest.approx(288 * (0.3 * 2 + h2) / 8)


def test_record_of_a_model_without_a_candidate_names_tensors(two_bit, tmp_path):
    """Without a candidate the layers are the TFLite weight tensors, with b read off the codes (1 bit here)."""
    _, tflite = two_bit
    info = read_tflite(tflite)
    record = measure_model(tflite, info, get_target("vela"), tmp_path, "two-bit")
    assert sorted(layer["layer"] for layer in record["layers"]) == sorted(t.name for t in info.weight_tensors)
    assert {layer["bits"] for layer in record["layers"]} == {1}


@pytest.mark.parametrize("images, labels", [
    (np.random.default_rng(1).random((6, 28, 28, 1), dtype=np.float32), None),
    (None, np.zeros(6, np.int64)),
    (np.zeros((0, 28, 28, 1), np.float32), np.zeros(0, np.int64)),
], ids=["images-only", "labels-only", "no-images"])
def test_no_accuracy_without_both_images_and_labels(hand_candidate, hand_tflite, tmp_path, images, labels):
    """Accuracy needs test images and their labels, and at least one image; otherwise the record has none."""
    record = measure_model(hand_tflite, read_tflite(hand_tflite), get_target("vela"), tmp_path, "hand",
                           hand_candidate, images, labels)
    assert "accuracy_int8" not in record and "accuracy_samples" not in record
    assert record["flash_bytes"] == compile_model(hand_tflite).flash_bytes


def test_measure_seconds_is_the_time_taken(hand_candidate, hand_tflite, tmp_path):
    started = time.perf_counter()
    record = measure_model(hand_tflite, read_tflite(hand_tflite), get_target("vela"), tmp_path, "hand", hand_candidate)
    took = time.perf_counter() - started
    assert 0 < record["measure_seconds"] <= took


def _reference_mask_bits(mask: np.ndarray) -> float:
    """The mask range-coded under Bernoulli(nnz/N) with constriction's leaky (perfect=False) quantisation,
    decoded back to prove it, plus the 64-bit header."""
    import constriction

    model = constriction.stream.model.Bernoulli(float(mask.mean()), perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(mask.astype(np.int32), model)
    words = encoder.get_compressed()
    assert np.array_equal(constriction.stream.queue.RangeDecoder(words).decode(model, mask.size), mask)
    return 32.0 * words.size + HEADER_BITS


def _seeded_mask(seed: int, size: int, share: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    share = rng.random() if share is None else share
    return (rng.random(size) < share).astype(np.int32)


@pytest.mark.parametrize("mask", [_seeded_mask(0, 100, 0.9), _seeded_mask(33, 64)], ids=["dense-100", "mixed-64"])
def test_range_coded_mask_of_nonzero_codes(mask):
    """The nonzero positions are coded, not the zeros: masks where the complement, or constriction's
    'perfect' quantisation, would need another word."""
    import constriction

    codes = np.where(mask == 1, np.int8(-3), np.int8(0))
    expected = _reference_mask_bits(mask)
    assert range_coded_mask_bits(codes) == expected
    perfect = constriction.stream.queue.RangeEncoder()
    perfect.encode(mask, constriction.stream.model.Bernoulli(float(mask.mean()), perfect=True))
    assert {_reference_mask_bits(1 - mask), 32.0 * perfect.get_compressed().size + HEADER_BITS} - {expected}
