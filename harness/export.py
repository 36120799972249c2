"""Export: candidate -> full-integer int8 TFLite that keeps every b-bit level and zero exact.

Weights are quantized per tensor: the TFLite converter's per-channel mode rescales each channel's
max to 127 and re-spreads a per-tensor b-bit grid into 42-50 codes (docs/papers.md, measured facts). A
symmetric grid d*k, |k| <= 2^(b-1)-1, maps onto int8 codes 127*k/kmax, one code per level, and
zeros stay zero; ``verify_exact`` checks this on the converted file every time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
import numpy as np

from core.candidate import Candidate, WEIGHT_OPS
from core.errors import HarnessError, UsageError
from core.tflite_model import TFLiteInfo, TensorInfo, read_tflite

MAX_DEPLOY_BITS = 8
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def check_deployable(candidate: Candidate) -> None:
    for layer in candidate.weight_layers():
        if layer["bits"] > MAX_DEPLOY_BITS:
            raise UsageError(
                f"candidate {candidate.name}: layer {layer['name']} has bits={layer['bits']}; Ethos-U runs int8 weights, "
                f"so finetune it with bits <= {MAX_DEPLOY_BITS} before export"
            )


def build_keras(candidate: Candidate):
    """The candidate as a Keras functional model with batch size 1 (Vela warns on dynamic batch)."""
    import keras

    spec = candidate.spec
    tensors = {"input": keras.Input(tuple(spec["input_shape"]), batch_size=1, name="input")}
    previous = "input"
    for layer in spec["layers"]:
        name, op = layer["name"], layer["op"]
        activation = {"none": None, "relu": "relu", "relu6": keras.activations.relu6}[layer.get("activation", "none")]
        if op == "add":
            out = keras.layers.Add(name=name)([tensors[i] for i in layer["inputs"]])
            if activation is not None:
                out = keras.layers.Activation(activation, name=f"{name}_act")(out)
        else:
            source = tensors[layer.get("input", previous)]
            if op == "conv":
                keras_layer = keras.layers.Conv2D(layer["out_channels"], layer["kernel"], strides=layer["stride"],
                                                  padding="same", activation=activation, name=name)
            elif op == "dwconv":
                keras_layer = keras.layers.DepthwiseConv2D(layer["kernel"], strides=layer["stride"], padding="same",
                                                           activation=activation, name=name)
            elif op == "dense":
                keras_layer = keras.layers.Dense(layer["out_channels"], activation=activation, name=name)
            else:
                keras_layer = keras.layers.GlobalAveragePooling2D(name=name)
            out = keras_layer(source)
            if op in WEIGHT_OPS:
                keras_layer.set_weights([candidate.weights[f"{name}.weight"], candidate.weights[f"{name}.bias"]])
        tensors[name] = out
        previous = name
    return keras.Model(tensors["input"], tensors[previous], name="candidate")


def to_int8_tflite(candidate: Candidate, representative: np.ndarray) -> bytes:
    """Convert with int8 input/output; ``representative`` is a few hundred float inputs (NHWC) for activation ranges."""
    check_deployable(candidate)
    samples = np.asarray(representative, np.float32)
    if samples.ndim != 4 or samples.shape[1:] != tuple(candidate.spec["input_shape"]):
        raise UsageError(
            f"calibration data has shape {samples.shape[1:]} but candidate {candidate.name} expects "
            f"{tuple(candidate.spec['input_shape'])}; pick the dataset the candidate was trained on"
        )

    with _converter_output_captured():
        import tensorflow as tf

        model = build_keras(candidate)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = True  # keeps the b-bit grid exact; see module docstring
        flatbuffer = converter.convert()
    verify_exact(candidate, read_tflite(flatbuffer, label=f"{candidate.name} (exported)"))
    return flatbuffer


@contextlib.contextmanager
def _converter_output_captured():
    """TensorFlow prints pages of progress on stdout and stderr, from Python and C++ alike.

    Both file descriptors go to a temporary file (stdout must stay clean for --json); the
    converter's last lines are only shown when the conversion fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except Exception as exc:
            log.flush()
            log.seek(0)
            tail = " | ".join(line.strip() for line in log.read().splitlines()[-3:] if line.strip())
            raise HarnessError(f"TFLite conversion failed: {exc}; converter said: {tail}") from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def tflite_layout(op: str, weight: np.ndarray) -> np.ndarray:
    """Keras layout -> the converter's: conv OHWI, depthwise 1HWC, dense [out, in]."""
    if op == "conv":
        return weight.transpose(3, 0, 1, 2)
    if op == "dwconv":
        return weight.transpose(3, 0, 1, 2)
    return weight.T


def match_weight_tensors(candidate: Candidate, info: TFLiteInfo) -> list[tuple[TensorInfo, dict]]:
    """Pair each TFLite weight tensor with its spec layer.

    Tensor names are the converter's own, so layers are matched by content: same shape and the
    same values up to int8 rounding. A tensor that matches none names the same-shape layer it is
    closest to.
    """
    pending = list(candidate.weight_layers())
    if len(info.weight_tensors) != len(pending):
        raise HarnessError(f"{candidate.name}: {len(info.weight_tensors)} weight tensors in the TFLite file, "
                           f"{len(pending)} weight layers in the spec")
    pairs = []
    for tensor in info.weight_tensors:
        off = {layer["name"]: _values_off(candidate, layer, tensor) for layer in pending}
        layer = next((layer for layer in pending if off[layer["name"]] == 0), None)
        if layer is None:
            same_shape = {name: count for name, count in off.items() if count is not None}
            hint = ""
            if same_shape:
                closest = min(same_shape, key=same_shape.get)
                hint = f" (closest: layer {closest}, {same_shape[closest]} of {tensor.data.size} values off)"
            raise HarnessError(f"{candidate.name}: TFLite weights {tensor.name!r} match no spec layer{hint}; "
                               "the model was changed beyond int8 rounding")
        pending.remove(layer)
        pairs.append((tensor, layer))
    return pairs


def _values_off(candidate: Candidate, layer: dict, tensor: TensorInfo) -> int | None:
    """How many of ``tensor``'s codes lie beyond int8 rounding of ``layer``'s weights; None for another shape."""
    expected = tflite_layout(layer["op"], candidate.weights[f"{layer['name']}.weight"])
    if expected.shape != tensor.data.shape:
        return None
    scale = float(tensor.scales[0])
    dequantized = tensor.data.astype(np.int32) * scale
    return int(np.count_nonzero(~(np.abs(dequantized - expected) <= scale * 0.51 + 1e-7)))  # NaN counts as off


def verify_exact(candidate: Candidate, info: TFLiteInfo) -> None:
    """Each deployed tensor equals its layer's weights: one code per nonzero level, zero exactly where
    the weight is zero, and at most 2^b nonzero codes.

    Matching within int8 rounding already sends every zero weight to code 0, so a nonzero level
    rounded to zero, or two levels merged into one code, shows as fewer nonzero codes than levels.
    """
    for tensor, layer in match_weight_tensors(candidate, info):
        codes = tensor.data.astype(np.int32)
        weights = tflite_layout(layer["op"], candidate.weights[f"{layer['name']}.weight"])
        levels = np.unique(weights[weights != 0]).size
        distinct = np.unique(codes[codes != 0]).size
        if distinct != levels or distinct > 2 ** layer["bits"]:
            raise HarnessError(
                f"export of {candidate.name}: layer {layer['name']} lost exactness in conversion "
                f"({np.count_nonzero(codes == 0)} zeros vs {np.count_nonzero(weights == 0)} in the candidate, "
                f"{distinct} nonzero codes for {levels} levels, at most {2 ** layer['bits']}); "
                f"its weights are not on a symmetric {layer['bits']}-bit grid"
            )
