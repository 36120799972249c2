"""Hand-written candidates built with numpy only: weights on a symmetric b-bit grid with a
magnitude mask of nonzero fraction s, as a search would deploy them."""

from __future__ import annotations

import numpy as np

from core.candidate import FORMAT, Candidate, expected_weight_shapes


def grid_weights(shape, bits: int, nonzero: float, rng: np.random.Generator, scale: float = 0.3) -> np.ndarray:
    theta = rng.normal(0, scale, shape).astype(np.float32)
    keep = max(1, int(round(nonzero * theta.size)))
    threshold = np.sort(np.abs(theta).ravel())[-keep]
    mask = np.abs(theta) >= threshold
    r = float(np.abs(theta).max())
    if bits == 1:
        values = r * np.sign(theta)
    else:
        d = r / (2 ** (bits - 1) - 1)
        values = d * np.round(np.clip(theta, -r, r) / d)
    deployed = np.where(mask, values, 0).astype(np.float32)
    return deployed


def small_spec(input_shape=(28, 28, 1), bits: int = 4, nonzero: float = 0.5, channels: int = 8, classes: int = 10) -> dict:
    compression = {"bits": bits, "nonzero": nonzero, "width": 1.0, "range": 1.0, "offset": 0.0}
    return {
        "format": FORMAT,
        "name": f"hand-b{bits}-s{int(round(nonzero * 100))}",
        "input_shape": list(input_shape),
        "num_classes": classes,
        "layers": [
            {"name": "stem", "op": "conv", "input": "input", "kernel": 3, "stride": 2, "out_channels": channels, "activation": "relu6", **compression},
            {"name": "dw", "op": "dwconv", "kernel": 3, "stride": 1, "activation": "relu6", **compression},
            {"name": "project", "op": "conv", "kernel": 1, "stride": 1, "out_channels": channels, "activation": "none", **compression},
            {"name": "residual", "op": "add", "inputs": ["stem", "project"]},
            {"name": "pool", "op": "gap"},
            {"name": "fc", "op": "dense", "out_channels": classes, "activation": "none", **compression},
        ],
        "meta": {"strategy": "hand"},
    }


def make_candidate(bits: int = 4, nonzero: float = 0.5, seed: int = 0, **spec_args) -> Candidate:
    spec = small_spec(bits=bits, nonzero=nonzero, **spec_args)
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in expected_weight_shapes(spec).items():
        if key.endswith(".bias"):
            weights[key] = rng.normal(0, 0.05, shape).astype(np.float32)
        else:
            weights[key] = grid_weights(shape, bits, nonzero, rng)
    return Candidate(spec, weights)


def tflite_of(fn, shape, int8: bool = True) -> bytes:
    """A TFLite model of the TensorFlow function ``fn`` on inputs of ``shape``: full-integer int8 (random
    calibration) when ``int8``, else plain float32."""
    import tensorflow as tf

    function = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.rand(*shape).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()
