"""Weights as Vela's weight codec encodes them, and the features of ``core.flash_model`` read off an
int8 TFLite model: no compile, a few milliseconds per layer.

Each weight layer is reordered into the accelerator's bricks (OFM block depth 16, part-kernel-first
traversal where Vela's own rule picks it) and encoded with Vela's codec (``ethosu.mlw_codec``); the
sum differs from Vela's ``encodedWeights`` by stream padding and block choices, which the Flash model's
fitted coefficients absorb (docs/budgets.md).
"""

from __future__ import annotations

import numpy as np

from core.tflite_model import read_tflite

OFM_BLOCK_DEPTH = 16
WEIGHT_OPERATORS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dwconv", "FULLY_CONNECTED": "dense"}


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def encoded_bytes(volume: np.ndarray, depthwise: bool, accelerator: str = "ethos-u55-128") -> int:
    """Bytes of one layer's int8 codes ``volume`` (OHWI; a depthwise layer's O is its channels, I is 1)
    after Vela's brick reordering and weight codec."""
    from ethosu import mlw_codec
    from ethosu.vela.architecture_features import Accelerator, ArchitectureFeatures

    config = ArchitectureFeatures.accelerator_configs[Accelerator(accelerator)]
    volume = np.ascontiguousarray(volume, dtype=np.int16)
    out_depth, height, width, in_depth = volume.shape
    part_kernel = False
    if not depthwise and height * width > 1:  # Vela's traversal choice (weight_compressor)
        kernel = height * width
        depth_use = in_depth / _round_up(in_depth, 32)
        part_use = in_depth / _round_up(in_depth, 8) * kernel / _round_up(kernel, 4)
        part_kernel = part_use >= depth_use or in_depth <= 8
    encoded = mlw_codec.reorder_encode(config.ifm_ublock.depth, config.ofm_ublock.depth, volume,
                                       min(OFM_BLOCK_DEPTH, out_depth), depthwise, part_kernel, 8, 8, 8)
    return len(encoded[0] if isinstance(encoded, tuple) else encoded)


def volume_of(op: str, codes: np.ndarray) -> np.ndarray:
    """OHWI of a layer's codes in the converter's layout (conv OHWI, depthwise 1HWC, dense [out, in])."""
    if op == "dwconv":
        return codes.transpose(3, 1, 2, 0)
    if op == "dense":
        return codes.reshape(codes.shape[0], 1, 1, codes.shape[1])
    return codes


def flash_features(tflite: bytes, accelerator: str = "ethos-u55-128") -> dict[str, float]:
    """``core.flash_model`` features of an int8 model: encoded weight bytes, output channels of its weight
    layers, channels its average pools (MEAN) read."""
    info = read_tflite(tflite)
    encoded = channels = pooled = 0
    for operator in info.operators:
        if operator.name in WEIGHT_OPERATORS and len(operator.inputs) > 1:
            tensor = info.tensors[operator.inputs[1]]
            if tensor.data is None or tensor.data.ndim not in (2, 4):
                continue
            op = WEIGHT_OPERATORS[operator.name]
            volume = volume_of(op, tensor.data)
            encoded += encoded_bytes(volume, op == "dwconv", accelerator)
            channels += volume.shape[0]
        elif operator.name == "MEAN" and operator.inputs:
            pooled += info.tensors[operator.inputs[0]].shape[-1]
    return {"encoded": float(encoded), "channels": float(channels), "pooled": float(pooled)}
