"""Export, pinned exactly: the Keras model a spec builds computes what the spec says (against a numpy
forward pass written here), calibration data of another float type or shape, and the counts the
exactness check reports."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from core.candidate import FORMAT, Candidate, expected_weight_shapes, validate
from core.errors import HarnessError, UsageError
from core.tflite_model import read_tflite
from harness.export import build_keras, match_weight_tensors, to_int8_tflite
from tests.candidates import make_candidate

# --- build_keras against a reference forward pass -----------------------------------------------------


def _same_padded(x: np.ndarray, kernel: int, stride: int) -> tuple[np.ndarray, int, int]:
    """``x`` (H, W, C) padded as TensorFlow's "same" does (the odd pixel after), and the output size."""
    out_h, out_w = -(-x.shape[0] // stride), -(-x.shape[1] // stride)
    pad_h = max((out_h - 1) * stride + kernel - x.shape[0], 0)
    pad_w = max((out_w - 1) * stride + kernel - x.shape[1], 0)
    padded = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    return padded, out_h, out_w


def _conv(x, weight, bias, stride, depthwise):
    """Cross-correlation, weight HWIO (depthwise: HWC1), one output pixel at a time."""
    kernel = weight.shape[0]
    padded, out_h, out_w = _same_padded(x, kernel, stride)
    out = np.zeros((out_h, out_w, x.shape[2] if depthwise else weight.shape[3]))
    for i, j in itertools.product(range(out_h), range(out_w)):
        patch = padded[i * stride:i * stride + kernel, j * stride:j * stride + kernel, :]
        if depthwise:
            out[i, j] = (patch * weight[:, :, :, 0]).sum(axis=(0, 1))
        else:
            out[i, j] = np.tensordot(patch, weight, axes=3)
    return out + bias


ACTIVATE = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}


def reference_forward(candidate: Candidate, image: np.ndarray) -> tuple[np.ndarray, int]:
    """The spec's function on one image (H, W, C), in float64; and how many values relu6 clipped at 6."""
    values, previous, clipped = {"input": image.astype(np.float64)}, "input", 0
    for layer in candidate.spec["layers"]:
        name, op = layer["name"], layer["op"]
        if op == "add":
            out = values[layer["inputs"][0]] + values[layer["inputs"][1]]
        else:
            source = values[layer.get("input", previous)]
            weight = candidate.weights.get(f"{name}.weight")
            bias = candidate.weights.get(f"{name}.bias")
            if op in ("conv", "dwconv"):
                out = _conv(source, weight.astype(np.float64), bias, layer["stride"], op == "dwconv")
            elif op == "dense":
                out = source @ weight.astype(np.float64) + bias
            else:
                out = source.mean(axis=(0, 1))
        activation = layer.get("activation", "none")
        clipped += int(np.count_nonzero(out > 6)) if activation == "relu6" else 0
        values[name] = ACTIVATE[activation](out)
        previous = name
    return values[previous], clipped


def _branchy_candidate() -> Candidate:
    """Every op and activation, convolutions and depthwise ones with strides 1 and 2 on even sizes
    (asymmetric padding), kernels 1, 3, 5, adds with and without an activation, a first layer that
    names no input (so reads the model's), and a layer that reads an earlier layer, not the one before."""
    compression = {"bits": 8, "nonzero": 1.0, "width": 1.0, "range": 1.0, "offset": 0.0}
    spec = {"format": FORMAT, "name": "branchy", "input_shape": [10, 10, 2], "num_classes": 3, "layers": [
        {"name": "stem", "op": "conv", "kernel": 3, "stride": 2, "out_channels": 4,
         "activation": "relu6", **compression},
        {"name": "dw", "op": "dwconv", "kernel": 3, "stride": 1, "activation": "relu", **compression},
        {"name": "project", "op": "conv", "kernel": 1, "stride": 1, "out_channels": 4, "activation": "none",
         **compression},
        {"name": "residual", "op": "add", "inputs": ["stem", "project"], "activation": "relu6"},
        {"name": "side", "op": "dwconv", "input": "stem", "kernel": 5, "stride": 1, "activation": "none",
         **compression},
        {"name": "join", "op": "add", "inputs": ["residual", "side"]},
        {"name": "shrink", "op": "dwconv", "kernel": 3, "stride": 2, "activation": "relu6", **compression},
        {"name": "pool", "op": "gap"},
        {"name": "fc", "op": "dense", "out_channels": 3, "activation": "relu", **compression},
    ], "meta": {}}
    rng = np.random.default_rng(5)
    weights = {key: rng.normal(0, 0.6 if key.endswith(".weight") else 0.3, shape).astype(np.float32)
               for key, shape in expected_weight_shapes(spec).items()}
    candidate = Candidate(spec, weights)
    validate(candidate)
    return candidate


def test_the_keras_model_computes_the_spec():
    """build_keras's model, on images large enough that relu6 clips, equals the spec's forward pass."""
    candidate = _branchy_candidate()
    model = build_keras(candidate)
    assert tuple(model.input.shape) == (1, 10, 10, 2)  # batch size 1, as Vela wants it
    images = np.random.default_rng(6).random((3, 10, 10, 2), dtype=np.float32) * 8
    clipped = 0
    for image in images:
        expected, clips = reference_forward(candidate, image)
        clipped += clips
        actual = np.asarray(model(image[None], training=False))[0]
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    assert clipped > 0  # the images do reach relu6's ceiling


def test_the_keras_layers_carry_the_spec_names():
    """The names the converted file's tensors (and Vela's reports) are built from: the model's input is
    "input", each layer is named as in the spec, an add's activation after it as <add>_act."""
    model = build_keras(_branchy_candidate())
    assert model.name == "candidate"
    assert [layer.name for layer in model.layers] == ["input", "stem", "dw", "project", "residual", "residual_act",
                                                      "side", "join", "shrink", "pool", "fc"]


# --- calibration data -----------------------------------------------------------------------------------


def test_float64_calibration_exports_the_same_file_as_float32(hand_candidate, hand_tflite, calibration):
    """The converter is fed float32 whatever float type the calibration images come in."""
    assert to_int8_tflite(hand_candidate, calibration.astype(np.float64)) == hand_tflite


@pytest.mark.parametrize("shape, found", [((4, 32, 32, 3), "(32, 32, 3)"), ((28, 28, 1), "(28, 1)"),
                                          ((2, 1, 28, 28, 1), "(1, 28, 28, 1)")])
def test_calibration_of_another_shape_is_refused_naming_both_shapes(shape, found):
    """A dataset of other images, one image without its batch axis, or an extra axis."""
    message = (f"calibration data has shape {found} but candidate hand-b4-s50 expects (28, 28, 1); "
               "pick the dataset the candidate was trained on")
    with pytest.raises(UsageError) as caught:
        to_int8_tflite(make_candidate(), np.zeros(shape, np.float32))
    assert str(caught.value) == message


# --- the counts verify_exact reports ---------------------------------------------------------------------


def test_a_lost_level_is_reported_with_the_zeros_codes_and_levels_counted(calibration):
    """At a quarter nonzero, zeros and nonzero codes differ in number: a weight far below the int8 step
    becomes one more zero code than the candidate has zero weights, and its level is lost."""
    candidate = make_candidate(bits=4, nonzero=0.25, seed=1)
    stem = candidate.weights["stem.weight"].copy()
    zeros = sum(1 for value in stem.flat if value == 0)
    levels = len({float(value) for value in stem.flat if value != 0})
    assert stem.size == 72 and zeros == 54 and 0 < levels <= 14  # 18 nonzero weights on a 4-bit grid
    stem.flat[next(i for i, value in enumerate(stem.flat) if value == 0)] = 1e-4 * np.abs(stem).max()
    doctored = Candidate(copy.deepcopy(candidate.spec), {**candidate.weights, "stem.weight": stem})
    with pytest.raises(HarnessError) as caught:
        to_int8_tflite(doctored, calibration)
    assert (f"layer stem lost exactness in conversion ({zeros} zeros vs {zeros - 1} in the candidate, "
            f"{levels} nonzero codes for {levels + 1} levels, at most 16); "
            "its weights are not on a symmetric 4-bit grid") in str(caught.value)


# --- pairing tensors with layers: the rounding tolerance and a tensor of no layer's shape ------------------


def _project_tensor(info):
    return next(t for t in info.weight_tensors if t.data.shape == (8, 1, 1, 8))


@pytest.mark.parametrize("steps, pairs", [(0.51, True), (0.515, False)])
def test_a_weight_pairs_with_its_code_up_to_0_51_int8_steps(hand_candidate, hand_tflite, steps, pairs):
    """Int8 rounding moves a weight at most half a step; 0.51 steps is still that layer's code, 0.515 is
    another value."""
    info = read_tflite(hand_tflite)
    tensor = _project_tensor(info)
    step = float(tensor.scales[0])
    first = int(np.flatnonzero(tensor.data)[0])  # OHWI index; Keras keeps project as HWIO
    o, _, _, i = np.unravel_index(first, tensor.data.shape)
    weight = hand_candidate.weights["project.weight"].copy()
    weight[0, 0, i, o] = np.float32(int(tensor.data.flat[first]) * step + steps * step)
    candidate = Candidate(copy.deepcopy(hand_candidate.spec), {**hand_candidate.weights, "project.weight": weight})
    if pairs:
        assert {layer["name"] for _, layer in match_weight_tensors(candidate, info)} == {"stem", "dw", "project", "fc"}
    else:
        with pytest.raises(HarnessError, match=r"closest: layer project, 1 of 64 values off"):
            match_weight_tensors(candidate, info)


def test_a_tensor_of_no_layer_shape_is_refused_in_one_plain_line(hand_candidate, hand_tflite):
    """No layer of that shape: no closest layer to name."""
    info = copy.deepcopy(read_tflite(hand_tflite))
    tensor = _project_tensor(info)
    tensor.data = tensor.data.reshape(64)
    with pytest.raises(HarnessError) as caught:
        match_weight_tensors(hand_candidate, info)
    assert str(caught.value) == (f"hand-b4-s50: TFLite weights {tensor.name!r} match no spec layer; "
                                 "the model was changed beyond int8 rounding")
