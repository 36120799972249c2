import copy
import itertools
import re

import numpy as np
import pytest

from core.candidate import Candidate, expected_weight_shapes
from core.errors import HarnessError, UsageError
from core.tflite_model import read_tflite
from harness.export import check_deployable, match_weight_tensors, tflite_layout, to_int8_tflite, verify_exact
from tests.candidates import grid_weights, make_candidate, small_spec


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("nonzero", [1.0, 0.5, 0.05])
def test_converted_weights_keep_levels_and_zeros(bits, nonzero, calibration):
    candidate = make_candidate(bits=bits, nonzero=nonzero, seed=bits)
    info = read_tflite(to_int8_tflite(candidate, calibration))
    assert info.input.dtype == "INT8" and info.output.dtype == "INT8"
    assert info.input.shape == (1, 28, 28, 1)
    assert len(info.weight_tensors) == len(candidate.weight_layers())
    by_layout = {}
    for layer in candidate.weight_layers():
        weights = tflite_layout(layer["op"], candidate.weights[f"{layer['name']}.weight"])
        by_layout.setdefault(weights.shape, []).append(weights)
    for tensor in info.weight_tensors:
        codes = tensor.data.astype(np.int32)
        assert tensor.dtype == "INT8"
        assert tensor.scales.size == 1, "weights must be quantized per tensor to keep the grid"
        # The deployed tensor is one of the candidate's, code for level, zero for zero.
        source = next(w for w in by_layout[codes.shape]
                      if np.allclose(codes * tensor.scales[0], w, atol=tensor.scales[0] * 0.51))
        assert np.array_equal(codes == 0, source == 0)
        distinct_codes = np.unique(codes[codes != 0]).size
        assert distinct_codes == np.unique(source[source != 0]).size
        assert distinct_codes <= 2 ** bits
        # The grid is symmetric and every level lands on its own code: codes are multiples of 127/kmax.
        if bits > 1:
            kmax = 2 ** (bits - 1) - 1
            assert np.allclose(codes / (127 / kmax), np.round(codes / (127 / kmax)), atol=0.5 * kmax / 127 + 1e-9)


def test_bits_above_eight_are_refused_at_export(calibration):
    candidate = make_candidate(bits=4)
    candidate.spec["layers"][2]["bits"] = 16
    with pytest.raises(UsageError, match="layer project has bits=16; Ethos-U runs int8"):
        check_deployable(candidate)
    with pytest.raises(UsageError, match="bits=16"):
        to_int8_tflite(candidate, calibration)


def test_calibration_data_of_the_wrong_shape_is_refused():
    with pytest.raises(UsageError, match="calibration data has shape"):
        to_int8_tflite(make_candidate(), np.zeros((4, 32, 32, 3), np.float32))


# --- verify_exact and the pairing of TFLite tensors with spec layers ---------------------------------

# The hand candidate's layers in the converter's layouts, worked out from the spec (8 channels,
# 10 classes, 28x28x1 input): conv OHWI, depthwise 1HWC, dense [out, in].
HAND_SHAPES = {"stem": (8, 3, 3, 1), "dw": (1, 3, 3, 8), "project": (8, 1, 1, 8), "fc": (10, 8)}


def _doctored(candidate, info, layer_name, codes=None, keras_weight=None):
    """Copies of a real export and its candidate with one layer's int8 codes and/or float weights replaced."""
    info = copy.deepcopy(info)
    weights = dict(candidate.weights)
    if codes is not None:
        tensor = next(t for t in info.weight_tensors if t.data.shape == HAND_SHAPES[layer_name])
        tensor.data = np.asarray(codes, np.int8).reshape(HAND_SHAPES[layer_name])
    if keras_weight is not None:
        weights[f"{layer_name}.weight"] = np.asarray(keras_weight, np.float32)
    return Candidate(copy.deepcopy(candidate.spec), weights), info


def _tensor(info, layer_name):
    return next(t for t in info.weight_tensors if t.data.shape == HAND_SHAPES[layer_name])


def test_unmodified_export_is_exact(hand_candidate, hand_tflite):
    """The converter's file for a grid candidate passes the check, layer by layer in the expected layouts."""
    info = read_tflite(hand_tflite)
    assert sorted(t.data.shape for t in info.weight_tensors) == sorted(HAND_SHAPES.values())
    assert verify_exact(hand_candidate, info) is None


def test_a_zero_code_turned_nonzero_is_refused_naming_the_layer(hand_candidate, hand_tflite):
    """One zero weight deployed as a nonzero code: the tensor matches no layer and the error names the closest."""
    info = read_tflite(hand_tflite)
    codes = _tensor(info, "stem").data.copy()
    zero = np.flatnonzero(codes == 0)[0]
    codes.flat[zero] = codes[codes != 0][0]  # a code the layer does use, at a place it must be zero
    candidate, doctored = _doctored(hand_candidate, info, "stem", codes=codes)
    with pytest.raises(HarnessError, match=r"match no spec layer \(closest: layer stem, 1 of 72 values off\)"):
        verify_exact(candidate, doctored)


def test_a_code_one_step_off_is_refused(hand_candidate, hand_tflite):
    """A nonzero code moved by one int8 step is beyond rounding of the candidate's weight."""
    info = read_tflite(hand_tflite)
    codes = _tensor(info, "project").data.astype(np.int32)
    first = np.flatnonzero(codes)[0]
    codes.flat[first] -= np.sign(codes.flat[first])  # one int8 step towards zero
    candidate, doctored = _doctored(hand_candidate, info, "project", codes=codes)
    with pytest.raises(HarnessError, match=r"match no spec layer \(closest: layer project, 1 of 64 values off\)"):
        verify_exact(candidate, doctored)


def test_a_nonzero_weight_rounded_to_zero_is_refused_at_export(hand_candidate, calibration):
    """A weight far below the layer's int8 step becomes code 0: one zero more than the candidate holds."""
    stem = hand_candidate.weights["stem.weight"].copy()
    zeros = int(np.count_nonzero(stem == 0))
    stem.flat[np.flatnonzero(stem == 0)[0]] = 1e-4 * np.abs(stem).max()
    candidate = Candidate(copy.deepcopy(hand_candidate.spec), {**hand_candidate.weights, "stem.weight": stem})
    message = rf"layer stem lost exactness.*\({zeros} zeros vs {zeros - 1} in the candidate"
    with pytest.raises(HarnessError, match=message):
        to_int8_tflite(candidate, calibration)


def test_two_levels_merged_into_one_code_are_refused(hand_candidate, hand_tflite):
    """A second level within int8 rounding of an existing one maps onto the same code: a level is lost."""
    info = read_tflite(hand_tflite)
    tensor = _tensor(info, "project")
    step = float(tensor.scales[0])
    weight = hand_candidate.weights["project.weight"].copy()
    weight.flat[np.flatnonzero(weight)[0]] += 0.2 * step
    levels = np.unique(hand_candidate.weights["project.weight"]).size - 1  # distinct nonzero levels before
    candidate, doctored = _doctored(hand_candidate, info, "project", keras_weight=weight)
    message = rf"layer project lost exactness.*{levels} nonzero codes for {levels + 1} levels"
    with pytest.raises(HarnessError, match=message):
        verify_exact(candidate, doctored)


@pytest.mark.parametrize("levels, exact", [(16, True), (17, False)])
def test_at_most_two_to_the_b_nonzero_levels(hand_candidate, hand_tflite, levels, exact):
    """project has b=4: 16 distinct nonzero codes are deployable, 17 are not (file and candidate agree)."""
    assert next(layer for layer in hand_candidate.layers if layer["name"] == "project")["bits"] == 4
    info = read_tflite(hand_tflite)
    step = float(_tensor(info, "project").scales[0])
    values = [7 * k for k in range(-8, 10) if k != 0][:levels]  # up to 17 codes: -56..-7, 7..63
    codes = np.zeros(64, np.int32)
    codes[: len(values)] = values
    ohwi = codes.reshape(8, 1, 1, 8)
    keras = ohwi.transpose(1, 2, 3, 0) * step  # OHWI -> HWIO
    candidate, doctored = _doctored(hand_candidate, info, "project", codes=codes, keras_weight=keras)
    if exact:
        verify_exact(candidate, doctored)
    else:
        message = r"layer project lost exactness.*17 nonzero codes for 17 levels, at most 16\)"
        with pytest.raises(HarnessError, match=message):
            verify_exact(candidate, doctored)


def test_a_missing_weight_tensor_is_refused(hand_candidate, hand_tflite):
    """Three weight tensors in the file against four weight layers in the spec."""
    info = read_tflite(hand_tflite)
    info.weight_tensors = info.weight_tensors[1:]
    with pytest.raises(HarnessError, match="3 weight tensors in the TFLite file, 4 weight layers in the spec"):
        verify_exact(hand_candidate, info)


def _twin_candidate() -> Candidate:
    """Three 1x1 convs of one shape: beta carries alpha's weights with one level moved by 1e-5 of itself
    (well inside int8 rounding, yet a separate constant for the converter); gamma has its own weights."""
    compression = {"bits": 4, "nonzero": 0.6, "width": 1.0, "range": 1.0, "offset": 0.0}
    conv = {"op": "conv", "kernel": 1, "stride": 1, "out_channels": 6, "activation": "relu", **compression}
    spec = small_spec(channels=6)
    spec["layers"] = [
        {**conv, "name": "stem", "input": "input", "kernel": 3, "stride": 2},
        {**conv, "name": "alpha"},
        {**conv, "name": "beta"},
        {**conv, "name": "gamma"},
        {"name": "pool", "op": "gap"},
        {"name": "fc", "op": "dense", "out_channels": 10, "activation": "none", **compression},
    ]
    rng = np.random.default_rng(11)
    weights = {}
    for key, shape in expected_weight_shapes(spec).items():
        bias = key.endswith(".bias")
        weights[key] = rng.normal(0, 0.05, shape).astype(np.float32) if bias else grid_weights(shape, 4, 0.6, rng)
    alpha = weights["alpha.weight"]
    level = alpha[alpha != 0][0]
    weights["beta.weight"] = np.where(alpha == level, np.float32(level * (1 + 1e-5)), alpha).astype(np.float32)
    return Candidate(spec, weights)


@pytest.fixture(scope="module")
def twins(calibration):
    candidate = _twin_candidate()
    return candidate, read_tflite(to_int8_tflite(candidate, calibration))


@pytest.mark.parametrize("order", ["file", "reversed"])
def test_same_shape_layers_pair_by_content_each_once(twins, order):
    """Pairing ignores tensor order: gamma's tensor goes to gamma although alpha and beta have its shape, and
    the twins alpha and beta, which both match either tensor, are each used once."""
    candidate, info = twins
    if order == "reversed":
        info = copy.copy(info)
        info.weight_tensors = info.weight_tensors[::-1]
    pairs = match_weight_tensors(candidate, info)
    assert sorted(layer["name"] for _, layer in pairs) == ["alpha", "beta", "fc", "gamma", "stem"]
    for tensor, layer in pairs:
        owner = "alpha|beta" if layer["name"] in ("alpha", "beta") else layer["name"]
        assert re.search(rf"/({owner})(_\d+)?/", tensor.name), (tensor.name, layer["name"])


def test_a_changed_tensor_names_the_closest_same_shape_layer(twins):
    """Two of gamma's codes off: gamma is named, not alpha or beta (same shape, most values off; the
    tensors are taken last to first so that all three layers are still unpaired)."""
    candidate, info = twins
    info = copy.deepcopy(info)
    info.weight_tensors = info.weight_tensors[::-1]
    tensor = next(t for t in info.weight_tensors if re.search(r"/gamma(_\d+)?/", t.name))
    codes = tensor.data.astype(np.int32)
    codes.flat[:2] = np.where(codes.flat[:2] > 0, codes.flat[:2] - 60, codes.flat[:2] + 60)
    tensor.data = codes.astype(np.int8)
    with pytest.raises(HarnessError, match=r"match no spec layer \(closest: layer gamma, 2 of 36 values off\)"):
        match_weight_tensors(candidate, info)


def test_layouts_against_index_loops():
    """Keras HWIO conv -> OHWI, depthwise HWC1 -> 1HWC, dense [in, out] -> [out, in], element by element."""
    conv = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    expected = np.zeros((5, 2, 3, 4), np.float32)
    for h, w, i, o in itertools.product(range(2), range(3), range(4), range(5)):
        expected[o, h, w, i] = conv[h, w, i, o]
    assert np.array_equal(tflite_layout("conv", conv), expected)

    depthwise = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    expected = np.zeros((1, 2, 3, 4), np.float32)
    for h, w, c in itertools.product(range(2), range(3), range(4)):
        expected[0, h, w, c] = depthwise[h, w, c, 0]
    assert np.array_equal(tflite_layout("dwconv", depthwise), expected)

    dense = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    expected = np.zeros((7, 3), np.float32)
    for i, o in itertools.product(range(3), range(7)):
        expected[o, i] = dense[i, o]
    assert np.array_equal(tflite_layout("dense", dense), expected)


def test_eight_bits_is_the_deployable_limit():
    """Ethos-U runs int8 weights: every layer at 8 bits passes, one layer at 9 is refused by name."""
    candidate = make_candidate(bits=8)
    assert check_deployable(candidate) is None
    candidate.spec["layers"][0]["bits"] = 9
    with pytest.raises(UsageError, match=r"layer stem has bits=9; .*finetune it with bits <= 8 before export"):
        check_deployable(candidate)
