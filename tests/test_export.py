import numpy as np
import pytest

from harness.errors import UsageError
from harness.export import check_deployable, tflite_layout, to_int8_tflite
from harness.tflite_model import read_tflite
from tests.candidates import make_candidate


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
