"""What TFLM cannot run although the model is valid TFLite, found before TFLM is asked to.

TFLM answers some models with ``abort()`` rather than an error status: its int8 SOFTMAX turns the
input scale into a fixed-point multiplier with ``QuantizeMultiplierGreaterThanOne(beta * scale * 2^26)``,
which aborts when the product is not above 1. A stock Keras MobileNetV2 with random weights and
BatchNorm statistics that do not match its calibration images hits it: its activations shrink layer by
layer, and the logits' range collapses to about 2e-6 (scale 7.8e-9). The same network with BatchNorm
statistics of the data (any trained model) loads and runs.
"""

from __future__ import annotations

from core.errors import ModelError
from core.tflite_model import TFLiteInfo

SOFTMAX_MIN_SCALE = 2.0 ** -26  # beta * scale must exceed this; the converter writes beta = 1 for Keras' softmax


def check_tflm_can_run(info: TFLiteInfo, label: str) -> None:
    """Raise ModelError naming the operator, the tensor and the fix when TFLM would abort on ``info``."""
    for op in info.operators:
        if op.name != "SOFTMAX" or not op.inputs or op.inputs[0] < 0:
            continue
        tensor = info.tensors[op.inputs[0]]
        if tensor.dtype != "INT8" or not len(tensor.scales):
            continue
        scale = float(tensor.scales[0])
        if scale <= SOFTMAX_MIN_SCALE:
            raise ModelError(
                f"{label}: TFLM cannot run its SOFTMAX (it aborts): the input {tensor.name!r} has scale {scale:.3g}, "
                f"not above the 2^-26 ({SOFTMAX_MIN_SCALE:.3g}) TFLM's int8 softmax needs; the logits' range "
                f"collapsed at calibration (untrained weights, or BatchNorm statistics that do not match the data): "
                f"train the model or calibrate it with real data")
