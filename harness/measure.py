"""Measure: one model on one target -> one measurement record (store column names).

Besides the target's counters, every record carries three size figures of the deployed int8
weights, so measured Flash can be read against the size model:

- ``rhs_bound_bytes``: the size model N*(s*b + H2(s)) bits per layer (``core.size_model``);
- ``empirical_entropy_bytes``: N*H(codes) bits per tensor, the LHS of the bound;
- ``coded_mask_bytes``: each nonzero mask actually range-coded (constriction) plus b bits per
  nonzero value: a size a real decoder could reach, not a bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.candidate import Candidate
from core.predictions import encode as encode_predictions
from core.errors import HarnessError
from core.size_model import effective_bits, empirical_entropy_bits, layer_size_bits, range_coded_mask_bits
from core.tflite_model import TFLiteInfo, TensorInfo
from harness.export import match_weight_tensors
from targets.base import Target

@dataclass
class LayerSize:
    layer: str
    elements: int
    nonzero: float
    bits: int
    rhs_bound_bits: float
    entropy_bits: float
    coded_bits: float

    def as_dict(self) -> dict:
        return dict(vars(self))


def layer_sizes(info: TFLiteInfo, candidate: Candidate | None) -> list[LayerSize]:
    """Per weight tensor figures; a candidate's spec supplies b and s, otherwise they are read off the codes."""
    if candidate is not None:
        pairs = match_weight_tensors(candidate, info)
    else:
        pairs = [(tensor, None) for tensor in info.weight_tensors]
    sizes = []
    for tensor, layer in pairs:
        codes = tensor.data.astype(np.int32)
        bits = layer["bits"] if layer else effective_bits(codes)
        nonzero = float(layer["nonzero"]) if layer else float(np.count_nonzero(codes)) / codes.size
        coded = range_coded_mask_bits(codes) + np.count_nonzero(codes) * bits
        sizes.append(LayerSize(layer["name"] if layer else tensor.name, int(codes.size), nonzero, int(bits),
                               layer_size_bits(codes.size, nonzero, bits), empirical_entropy_bits(codes), coded))
    return sizes


def quantize_inputs(images: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    scale, zero_point = float(tensor.scales[0]), int(tensor.zero_points[0])
    return np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)


def measure_model(tflite: bytes, info: TFLiteInfo, target: Target, workdir, label: str,
                  candidate: Candidate | None = None, test_images: np.ndarray | None = None,
                  test_labels: np.ndarray | None = None, allow_cpu_ops: bool = False) -> dict:
    """Run one int8 model through ``target``; return the record (without provenance)."""
    started = time.perf_counter()
    try:
        return _measure_prepared(tflite, info, target, workdir, label, candidate, test_images, test_labels,
                                 allow_cpu_ops, started)
    finally:
        target.close()  # an emulator or a serial port is not left behind, whatever happened


def _measure_prepared(tflite, info, target, workdir, label, candidate, test_images, test_labels, allow_cpu_ops,
                      started) -> dict:
    target.prepare(tflite, workdir, label)
    counters = target.counters()
    cpu_operators = counters.get("cpu_operators") or []
    if cpu_operators and not allow_cpu_ops:
        raise HarnessError(
            f"{label}: Vela cannot place {len(cpu_operators)} operator(s) on the NPU, they would run on the CPU: "
            f"{'; '.join(cpu_operators[:3])}; replace them with NPU-supported operators or pass --allow-cpu-ops"
        )
    sizes = layer_sizes(info, candidate)
    record = {key: counters[key] for key in counters}
    record.update({
        "rhs_bound_bytes": sum(s.rhs_bound_bits for s in sizes) / 8,
        "empirical_entropy_bytes": sum(s.entropy_bits for s in sizes) / 8,
        "coded_mask_bytes": sum(s.coded_bits for s in sizes) / 8,
        "layers": [s.as_dict() for s in sizes],
        "tflite_bytes": len(tflite),
    })
    if test_images is not None and test_labels is not None and len(test_images):
        record.update(accuracy(target, quantize_inputs(test_images, info.input), test_labels))
    record["measure_seconds"] = time.perf_counter() - started
    return record


def accuracy(target: Target, inputs: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 accuracy of the target's outputs on int8 ``inputs``, and each sample's prediction (for paired
    comparisons, ``results.paired``)."""
    predictions = target.infer(inputs).reshape(len(inputs), -1).argmax(axis=1)
    return {"accuracy_int8": float((predictions == labels).mean()), "accuracy_samples": int(len(inputs)),
            "predictions": encode_predictions(predictions, labels)}


def pixel_codes(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as the int8 codes of their 8-bit pixels (scale 1/255, zero point -128): the input
    of a device whose model the harness has no file of."""
    return (np.clip(np.round(images * 255), 0, 255) - 128).astype(np.int8)


def measure_device(target: Target, tflite: bytes | None, info: TFLiteInfo | None, workdir, label: str,
                   test_images: np.ndarray | None = None, test_labels: np.ndarray | None = None) -> dict:
    """Measure the model a device holds (``target.holds_model``): its performance windows and, with test
    images, its accuracy; ``tflite``, when given, names the model and quantises the inputs."""
    started = time.perf_counter()
    try:
        target.prepare(tflite, workdir, label)
        record = dict(target.counters())
        if tflite is not None:
            record["tflite_bytes"] = len(tflite)
        if test_images is not None and test_labels is not None and len(test_images):
            inputs = quantize_inputs(test_images, info.input) if info is not None else pixel_codes(test_images)
            record.update(accuracy(target, inputs, test_labels))
        record["measure_seconds"] = time.perf_counter() - started
        return record
    finally:
        target.close()
