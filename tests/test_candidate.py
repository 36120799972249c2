import json

import numpy as np
import pytest

from core import candidate as candidate_io
from core.errors import UsageError
from tests.candidates import make_candidate


def test_save_load_round_trip_keeps_hash_and_values(tmp_path):
    original = make_candidate(bits=4, nonzero=0.5)
    original.save(tmp_path / "c")
    loaded = candidate_io.load(tmp_path / "c")
    assert loaded.content_hash == original.content_hash
    assert loaded.spec == original.spec
    for key, array in original.weights.items():
        np.testing.assert_array_equal(loaded.weights[key], array)


def test_hash_ignores_meta_but_not_weights_or_architecture():
    base = make_candidate()
    other_meta = make_candidate()
    other_meta.spec["meta"] = {"strategy": "something else", "accuracy_float": 0.5}
    assert other_meta.content_hash == base.content_hash
    changed_weight = make_candidate()
    changed_weight.weights["fc.bias"][0] += 1e-3
    assert changed_weight.content_hash != base.content_hash
    changed_bits = make_candidate()
    changed_bits.spec["layers"][0]["bits"] = 8
    assert changed_bits.content_hash != base.content_hash


def _write(tmp_path, candidate):
    directory = tmp_path / "c"
    directory.mkdir(exist_ok=True)
    (directory / "spec.json").write_text(json.dumps(candidate.spec))
    np.savez(directory / "weights.npz", **candidate.weights)
    return directory


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.weights.__setitem__("stem.weight", np.zeros((5, 5, 1, 8), np.float32)), "stem.weight has shape"),
    (lambda c: c.spec["layers"][0].__setitem__("bits", 0), "bits=0 is outside"),
    (lambda c: c.spec["layers"][0].__setitem__("bits", 33), "bits=33 is outside"),
    (lambda c: c.spec["layers"][1].__setitem__("nonzero", 0.0), "nonzero=0.0 must be in (0, 1]"),
    (lambda c: c.spec["layers"][1].__setitem__("nonzero", 1.5), "nonzero=1.5 must be in (0, 1]"),
    (lambda c: c.spec["layers"][0].__setitem__("op", "lstm"), "unknown op 'lstm'"),
    (lambda c: c.spec["layers"][3].__setitem__("inputs", ["stem", "nowhere"]), "add needs 'inputs'"),
    (lambda c: c.spec.__setitem__("input_shape", [28, 28]), "$.input_shape: expected [H, W, C]"),
    (lambda c: c.weights.pop("fc.bias"), "lacks fc.bias"),
])
def test_malformed_spec_is_one_clear_usage_error(tmp_path, mutate, message):
    candidate = make_candidate()
    mutate(candidate)
    with pytest.raises(UsageError) as error:
        candidate_io.load(_write(tmp_path, candidate))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UsageError, match="no spec.json"):
        candidate_io.load(tmp_path)
    directory = _write(tmp_path, make_candidate())
    (directory / "spec.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        candidate_io.load(directory)
    _write(tmp_path, make_candidate())
    (directory / "weights.npz").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="unreadable weights archive"):
        candidate_io.load(directory)


def test_shapes_follow_same_padding():
    spec = make_candidate().spec
    shapes = candidate_io.layer_shapes(spec)
    assert shapes["stem"] == (14, 14, 8)  # 28 / stride 2, rounded up as TF SAME does
    assert shapes["pool"] == (8,)
    assert shapes["fc"] == (10,)
