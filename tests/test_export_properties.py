"""Export exactness for random grid candidates: any width, any deployable bitwidth, any sparsity.

The bound on distinct codes comes from the quantizer the candidates use (tests/candidates.py
``grid_weights``): levels d*k with |k| <= 2^(b-1) - 1 and zero left out give 2^b - 2 nonzero levels
for b > 1; b = 1 is +-r, two levels.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tflite_model import read_tflite
from harness.export import check_deployable, to_int8_tflite, verify_exact
from tests.candidates import make_candidate

candidates = st.builds(
    make_candidate,
    bits=st.integers(1, 8),
    nonzero=st.floats(0.02, 1.0),
    seed=st.integers(0, 2**16),
    channels=st.integers(1, 12),
    classes=st.integers(2, 10),
)


def grid_level_bound(bits: int) -> int:
    return 2 if bits == 1 else 2**bits - 2


def converter_layout(op: str, weight: np.ndarray) -> np.ndarray:
    """Keras HWIO (depthwise HWC1) -> OHWI (1HWC); dense [in, out] -> [out, in]."""
    return np.moveaxis(weight, -1, 0) if op in ("conv", "dwconv") else np.swapaxes(weight, 0, 1)


def check_exact_export(candidate, calibration) -> None:
    check_deployable(candidate)
    info = read_tflite(to_int8_tflite(candidate, calibration))
    verify_exact(candidate, info)
    assert len(info.weight_tensors) == len(candidate.weight_layers())
    for layer in candidate.weight_layers():
        tensor = next(t for t in info.weight_tensors if re.search(rf"/{layer['name']}(_\d+)?/", t.name))
        weight = converter_layout(layer["op"], candidate.weights[f"{layer['name']}.weight"])
        codes = tensor.data.astype(np.int32)
        step = float(tensor.scales[0])
        assert tensor.scales.size == 1 and codes.shape == weight.shape
        assert np.array_equal(codes == 0, weight == 0), layer["name"]
        levels = np.unique(weight[weight != 0]).size
        assert np.unique(codes[codes != 0]).size == levels <= grid_level_bound(layer["bits"])
        assert np.abs(codes * step - weight).max() <= 0.5 * step * (1 + 1e-4)


@settings(max_examples=6)
@given(candidate=candidates)
def test_random_grid_candidates_export_exactly(candidate, calibration):
    """Each weight tensor keeps its zeros in place and one code per level, at most the grid's level count."""
    check_exact_export(candidate, calibration)


@pytest.mark.slow
@settings(max_examples=60)
@given(candidate=candidates)
def test_random_grid_candidates_export_exactly_many(candidate, calibration):
    """The same property over many more candidates."""
    check_exact_export(candidate, calibration)
