"""MLPerf Tiny's benchmarks as a device names them in ``m-model-[...]`` (docs/protocol.md): the input
each reference firmware takes, and the runner's performance settings (``tests_performance.yaml``:
5 windows of ``infer N W``). One table, read by the host for reference devices and ours alike; our
firmware applies the same input rule in C (``firmware/core/benchmark.c``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8, UINT8_SHIFTED = "int8", "uint8-shifted"
FORMATS = (INT8, UINT8_SHIFTED)
WINDOWS = 5  # the runner's performance loop count ("loop 5")
MIN_WINDOW_S = 10.0  # MLPerf Tiny's minimum duration of a performance window


@dataclass(frozen=True)
class ReferenceModel:
    model_id: str
    benchmark: str
    input_format: str  # what the device is sent: int8 as is, or uint8 = int8 + 128
    input_bytes: int
    runs: int  # timed inferences per performance window
    warmups: int


REFERENCE_MODELS = {model.model_id: model for model in (
    ReferenceModel("ic01", "image classification (CIFAR-10 ResNet)", UINT8_SHIFTED, 32 * 32 * 3, 20, 5),
    ReferenceModel("vww01", "visual wake words (MobileNet 96x96)", UINT8_SHIFTED, 96 * 96 * 3, 20, 5),
    ReferenceModel("kws01", "keyword spotting (DS-CNN)", INT8, 49 * 10, 70, 10),
    ReferenceModel("ad01", "anomaly detection (autoencoder)", INT8, 640, 1500, 10),
)}
DEFAULT_RUNS, DEFAULT_WARMUPS = 20, 5  # a model id the table lacks: the image benchmarks' settings


def input_format(model_id: str | None, announced: str | None = None) -> str:
    """The input format of a device: what it announces (``m-input-format-[...]``), else its model id's
    reference format, else int8."""
    if announced in FORMATS:
        return announced
    model = REFERENCE_MODELS.get(model_id or "")
    return model.input_format if model else INT8


def encode_input(sample: np.ndarray, format_: str) -> bytes:
    """The bytes a device taking ``format_`` is sent for the int8 ``sample``."""
    data = np.ascontiguousarray(sample, dtype=np.int8)
    if format_ == UINT8_SHIFTED:
        return (data.view(np.uint8) ^ 0x80).tobytes()  # int8 + 128 as uint8
    return data.tobytes()


def performance_settings(model_id: str | None) -> tuple[int, int]:
    """(timed runs, warm-ups) per window as the runner's performance script has them."""
    model = REFERENCE_MODELS.get(model_id or "")
    return (model.runs, model.warmups) if model else (DEFAULT_RUNS, DEFAULT_WARMUPS)
