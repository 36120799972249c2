"""The figures a measurement record carries, against computations written out in the tests.

Input quantization is checked against the nearest of the 256 int8 codes, accuracy against a
host-TFLM loop run here image by image, and the size figures (coded mask + b bits per nonzero
value, empirical entropy, the size-model bound) against hand counts and an own range coding that
is decoded back.
"""

import math
import re
from collections import Counter

import numpy as np
import pytest

from core.tflite_model import TensorInfo, TFLiteInfo, read_tflite
from harness.export import to_int8_tflite
from harness.measure import (
    effective_bits,
    empirical_entropy_bits,
    layer_sizes,
    measure_model,
    quantize_inputs,
    range_coded_mask_bits,
)
from targets import get_target
from tests.candidates import make_candidate

HEADER_BITS = 64  # per coded tensor: its element count (4 bytes) and its nonzero probability (4 bytes)


def nearest_codes(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """For each value the int8 code whose dequantized value (code - zero_point) * scale lies nearest."""
    codes = np.arange(-128, 128)
    levels = (codes - zero_point) * scale
    flat = np.asarray(values, np.float64).ravel()
    nearest = np.array([codes[np.abs(levels - v).argmin()] for v in flat])
    return nearest.reshape(np.shape(values)).astype(np.int8)


def h2(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def reference_entropy_bits(codes: np.ndarray) -> float:
    counts = Counter(np.asarray(codes).ravel().tolist())
    total = sum(counts.values())
    return -sum(c * math.log2(c / total) for c in counts.values())


def reference_mask_bits(codes: np.ndarray) -> float:
    """The nonzero mask range-coded under Bernoulli(nnz/N), decoded back to prove it, plus the header."""
    import constriction

    mask = (np.asarray(codes).ravel() != 0).astype(np.int32)
    if mask.all() or not mask.any():
        return HEADER_BITS
    model = constriction.stream.model.Bernoulli(mask.sum() / mask.size, perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(mask, model)
    words = encoder.get_compressed()
    assert np.array_equal(constriction.stream.queue.RangeDecoder(words).decode(model, mask.size), mask)
    return 32 * words.size + HEADER_BITS


def assert_mask_bits_near_entropy(bits: float, codes: np.ndarray) -> None:
    """A real coder needs at least N*H2(p) bits and, for a few thousand symbols, at most two 32-bit words more."""
    mask = np.asarray(codes).ravel() != 0
    ideal = mask.size * h2(mask.mean())
    assert ideal + HEADER_BITS <= bits <= ideal + HEADER_BITS + 64


def _info(*arrays) -> TFLiteInfo:
    """A TFLiteInfo holding hand-written int8 weight tensors (the figures read nothing else)."""
    codes = [np.asarray(array, np.int8) for array in arrays]
    tensors = [TensorInfo(i, f"w{i}", "INT8", c.shape, np.ones(1, np.float32), np.zeros(1, np.int64), c)
               for i, c in enumerate(codes)]
    return TFLiteInfo(tensors, [], [], [], 0, weight_tensors=list(tensors))


# --- hand-computed small arrays ------------------------------------------------------------------


@pytest.mark.parametrize("values, bits", [
    ([7], 1), ([0, 0, 0, 7], 1), ([-3, 3], 1), ([0, 1, -1, 2], 2), ([0, 1, 2, 3, 4], 2),
    ([1, 2, 3, 4, 5], 3), ([0, 1, 2, 3, 4, 5, 6, 7, 8], 3), ([0, *range(1, 10)], 4),
    (list(range(-128, 128)), 8),  # every int8 code: 255 nonzero values
    ([0, 0, 0], 1),
])
def test_effective_bits_of_distinct_nonzero_values(values, bits):
    """ceil(log2(distinct nonzero values)), at least 1; zeros are the mask's, not a value."""
    assert effective_bits(np.array(values, np.int8)) == bits


@pytest.mark.parametrize("values, bits", [
    ([0, 0, 1, 1], 4.0),  # two symbols, half each: 1 bit apiece
    ([5] * 8, 0.0),
    ([-1, 0, 1, 2], 8.0),  # four equiprobable symbols: 2 bits apiece
    ([0, 0, 0, 0, 0, 0, 3, -3], 6 * math.log2(8 / 6) + 2 * 3.0),
])
def test_empirical_entropy_of_hand_arrays(values, bits):
    assert empirical_entropy_bits(np.array(values, np.int8)) == pytest.approx(bits)


@pytest.mark.parametrize("codes", [np.zeros(50, np.int8), np.full(50, -4, np.int8), np.arange(1, 101, dtype=np.int8)])
def test_uniform_masks_are_the_header_alone(codes):
    """All-zero and all-nonzero masks need no coded bits: the header's probability (0 or 1) says it all."""
    assert range_coded_mask_bits(codes) == HEADER_BITS


@pytest.mark.parametrize("codes", [
    np.array([0, 0, 1, 1], np.int8),
    np.array([0, 0, 3, -3, 3, 5, 0, 0], np.int8),
    np.where(np.random.default_rng(4).random(3000) < 0.07, 9, 0).astype(np.int8),
    np.where(np.random.default_rng(5).random(777) < 0.8, -2, 0).astype(np.int8),
])
def test_range_coded_mask_against_own_coding_and_entropy(codes):
    bits = range_coded_mask_bits(codes)
    assert bits == reference_mask_bits(codes)
    assert_mask_bits_near_entropy(bits, codes)


def test_layer_figures_without_a_spec_from_the_codes_alone():
    """A bring-your-own model: b from the distinct nonzero codes, s from the codes, coded = mask + nnz * b."""
    sparse = np.array([0, 0, 3, -3, 3, 5, 0, 0])  # 3 distinct nonzero -> b = 2, s = 4/8
    empty = np.zeros(6)  # b = 1, s = 0
    dense = np.array([1, 2, 3, 4, 5])  # 5 distinct -> b = 3, s = 1
    sizes = layer_sizes(_info(sparse, empty, dense), None)
    assert [(s.layer, s.elements, s.bits, s.nonzero) for s in sizes] == [
        ("w0", 8, 2, 0.5), ("w1", 6, 1, 0.0), ("w2", 5, 3, 1.0)]
    # N * (s * b + H2(s)): 8 * (0.5 * 2 + 1) = 16, 6 * 0 = 0, 5 * (1 * 3 + 0) = 15
    assert [s.rhs_bound_bits for s in sizes] == pytest.approx([16.0, 0.0, 15.0])
    # 4*log2(2) + 2*log2(4) + log2(8) + log2(8) = 14; a constant tensor has none; 5 equiprobable: 5*log2(5)
    assert [s.entropy_bits for s in sizes] == pytest.approx([14.0, 0.0, 5 * math.log2(5)])
    assert sizes[0].coded_bits == reference_mask_bits(sparse) + 4 * 2
    assert sizes[1].coded_bits == HEADER_BITS
    assert sizes[2].coded_bits == HEADER_BITS + 5 * 3


@pytest.fixture(scope="module")
def two_bit(calibration):
    """A 2-bit candidate: its grid has two nonzero levels (+-d), which the codes alone would call 1 bit."""
    candidate = make_candidate(bits=2, nonzero=0.3, seed=3)
    return candidate, read_tflite(to_int8_tflite(candidate, calibration))


def test_layer_figures_of_a_candidate_take_b_and_s_from_its_spec(two_bit):
    candidate, info = two_bit
    elements = {"stem": 72, "dw": 72, "project": 64, "fc": 80}  # 3*3*1*8, 3*3*8, 8*8, 8*10
    sizes = {s.layer: s for s in layer_sizes(info, candidate)}
    assert {name: s.elements for name, s in sizes.items()} == elements
    for name, size in sizes.items():
        codes = next(t.data for t in info.weight_tensors if re.search(rf"/{name}(_\d+)?/", t.name))
        assert effective_bits(codes) == 1  # what the codes alone would say
        assert size.bits == 2 and size.nonzero == 0.3
        assert size.rhs_bound_bits == pytest.approx(elements[name] * (0.3 * 2 + h2(0.3)))
        assert size.entropy_bits == pytest.approx(reference_entropy_bits(codes))
        assert size.coded_bits == reference_mask_bits(codes) + 2 * np.count_nonzero(codes)


# --- one real measurement on the vela target -------------------------------------------------------


def _images() -> np.ndarray:
    """40 inputs of four kinds (dimmed noise, crossing lines, clipped Gaussian, binary speckle) so that the
    hand model's predictions vary."""
    rng = np.random.default_rng(7)
    images = []
    for i in range(40):
        kind = i % 4
        if kind == 0:
            image = rng.random((28, 28, 1)) * rng.random()
        elif kind == 1:
            image = np.zeros((28, 28, 1))
            image[rng.integers(0, 28), :, 0] = 1
            image[:, rng.integers(0, 28), 0] = rng.random()
        elif kind == 2:
            image = np.clip(rng.normal(0.5, 0.3, (28, 28, 1)), 0, 1)
        else:
            image = (rng.random((28, 28, 1)) < rng.random()).astype(float)
        images.append(image)
    return np.array(images, np.float32)


def _host_predictions(tflite: bytes, inputs: np.ndarray) -> np.ndarray:
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(tflite)
    predictions = []
    for sample in inputs:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        predictions.append(int(interpreter.get_output(0).ravel().argmax()))
    return np.array(predictions)


@pytest.fixture(scope="module")
def measured(hand_candidate, hand_tflite, tmp_path_factory):
    """The hand model measured on the vela target with labels: its own predictions, 10 of 40 then made wrong."""
    info = read_tflite(hand_tflite)
    images = _images()
    scale, zero_point = float(info.input.scales[0]), int(info.input.zero_points[0])
    labels = _host_predictions(hand_tflite, nearest_codes(images, scale, zero_point))
    labels[:10] = (labels[:10] + 1) % 10
    record = measure_model(hand_tflite, info, get_target("vela"), tmp_path_factory.mktemp("measure"), "hand",
                           hand_candidate, images, labels)
    return record, info, images, labels


def test_inputs_quantize_to_the_nearest_int8_code(hand_tflite):
    """Values in range go to the nearest code, values outside saturate at -128 / 127."""
    info = read_tflite(hand_tflite)
    scale, zero_point = float(info.input.scales[0]), int(info.input.zero_points[0])
    assert zero_point != 0  # calibrated on [0, 1): 0.0 sits at the bottom of the int8 range
    images = np.concatenate([_images()[:4], np.full((1, 28, 28, 1), -0.3, np.float32),
                             np.full((1, 28, 28, 1), 1.7, np.float32)])
    quantized = quantize_inputs(images, info.input)
    assert quantized.dtype == np.int8
    assert np.array_equal(quantized, nearest_codes(images, scale, zero_point))
    assert (quantized[4] == -128).all() and (quantized[5] == 127).all()
    assert np.array_equal(quantize_inputs(np.zeros((1, 2), np.float32), info.input), [[-128, -128]])


def test_accuracy_equals_a_hand_run_of_host_tflm(measured, hand_tflite):
    record, info, images, labels = measured
    scale, zero_point = float(info.input.scales[0]), int(info.input.zero_points[0])
    expected = float((_host_predictions(hand_tflite, nearest_codes(images, scale, zero_point)) == labels).mean())
    assert expected == 30 / 40
    # The labels tell a wrong input quantization apart: a flipped zero point saturates and scores otherwise.
    saturated = _host_predictions(hand_tflite, nearest_codes(images, scale, -zero_point))
    assert float((saturated == labels).mean()) != expected
    assert record["accuracy_int8"] == expected
    assert record["accuracy_samples"] == 40


def test_size_figures_of_the_record(measured):
    """coded_mask_bytes = sum of (coded mask + 4 bits per nonzero code) / 8; entropy and bound likewise in bytes."""
    record, info, _, _ = measured
    tensors = [t.data for t in info.weight_tensors]
    assert sorted(c.size for c in tensors) == [64, 72, 72, 80]
    masks = [reference_mask_bits(c) for c in tensors]
    for bits, codes in zip(masks, tensors):
        assert_mask_bits_near_entropy(bits, codes)
    nonzero_codes = sum(np.count_nonzero(c) for c in tensors)
    assert record["coded_mask_bytes"] == pytest.approx((sum(masks) + 4 * nonzero_codes) / 8)
    assert record["empirical_entropy_bytes"] == pytest.approx(sum(reference_entropy_bits(c) for c in tensors) / 8)
    assert record["rhs_bound_bytes"] == pytest.approx(288 * (0.5 * 4 + 1.0) / 8)  # 288 weights, H2(0.5) = 1
    assert sorted((layer["layer"], layer["elements"]) for layer in record["layers"]) == [
        ("dw", 72), ("fc", 80), ("project", 64), ("stem", 72)]
    assert record["tflite_bytes"] == info.size_bytes
