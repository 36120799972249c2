import math

import numpy as np
import pytest

from core.errors import HarnessError, UsageError
from core.size_model import binary_entropy, empirical_entropy_bits, layer_size_bits, range_coded_mask_bits
from core.tflite_model import read_tflite
from harness.measure import layer_sizes, measure_model
from targets import get_target
from targets.vela_compiler import VelaSettings, compile_model
from tests.candidates import tflite_of


def test_vela_compiles_in_process_and_reports_sizes(hand_tflite):
    compiled = compile_model(hand_tflite)
    assert read_tflite(compiled.model).operators[0].name == "ethos-u"
    assert compiled.cpu_operators == []
    assert 0 < compiled.encoded_weight_bytes < compiled.original_weight_bytes
    assert compiled.flash_bytes >= compiled.encoded_weight_bytes
    assert compiled.npu_cycles > 0 and compiled.total_cycles >= compiled.npu_cycles
    assert compiled.latency_s == pytest.approx(compiled.total_cycles / 500e6)


def test_more_macs_means_fewer_cycles(hand_tflite):
    small = compile_model(hand_tflite, VelaSettings(accelerator="ethos-u55-32"))
    large = compile_model(hand_tflite, VelaSettings(accelerator="ethos-u55-256"))
    assert large.npu_cycles < small.npu_cycles
    assert large.encoded_weight_bytes > 0 and small.encoded_weight_bytes > 0


@pytest.mark.parametrize("settings, message", [
    (VelaSettings(accelerator="ethos-u55-512"), "unknown accelerator config 'ethos-u55-512'"),
    (VelaSettings(system_config="Nope"), "unknown Vela system config 'Nope'"),
    (VelaSettings(memory_mode="Nope"), "unknown Vela memory mode 'Nope'"),
])
def test_unknown_vela_settings_are_usage_errors(hand_tflite, settings, message):
    with pytest.raises(UsageError, match=message):
        compile_model(hand_tflite, settings)


def test_size_model_matches_a_hand_computation():
    # 1000 weights, 20% nonzero at 4 bits: 1000 * (0.2 * 4 + H2(0.2)) bits, H2(0.2) = 0.7219...
    assert binary_entropy(0.2) == pytest.approx(-(0.2 * math.log2(0.2) + 0.8 * math.log2(0.8)))
    assert layer_size_bits(1000, 0.2, 4) == pytest.approx(1000 * (0.8 + 0.7219280948873623))
    assert layer_size_bits(1000, 1.0, 8) == 8000


def test_empirical_entropy_and_range_coded_mask():
    codes = np.array([0, 0, 0, 0, 5, -5, 5, 0], np.int8)  # p(0)=5/8, p(5)=2/8, p(-5)=1/8
    expected = -(5 * math.log2(5 / 8) + 2 * math.log2(2 / 8) + 1 * math.log2(1 / 8))
    assert empirical_entropy_bits(codes) == pytest.approx(expected)
    rng = np.random.default_rng(1)
    sparse = np.where(rng.random(20000) < 0.1, 7, 0).astype(np.int8)
    coded = range_coded_mask_bits(sparse)
    bound = 20000 * binary_entropy(0.1)
    assert bound <= coded <= bound * 1.02 + 200  # a real coder lands just above the entropy


def test_range_coded_mask_decodes_back():
    import constriction

    mask = (np.random.default_rng(2).random(5000) < 0.3).astype(np.int32)
    encoder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Bernoulli(float(mask.mean()), perfect=False)
    encoder.encode(mask, model)
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    assert np.array_equal(decoder.decode(model, mask.size), mask)


def test_size_figures_of_a_candidate_use_its_spec(hand_candidate, hand_tflite):
    sizes = layer_sizes(read_tflite(hand_tflite), hand_candidate)
    assert sorted(s.layer for s in sizes) == sorted(layer["name"] for layer in hand_candidate.weight_layers())
    for size in sizes:
        assert size.bits == 4 and size.nonzero == 0.5
        assert size.rhs_bound_bits == pytest.approx(size.elements * (0.5 * 4 + 1.0))
        # Entropy of the deployed codes never exceeds the bound (which holds for any b-bit values).
        assert size.entropy_bits <= size.rhs_bound_bits + 1e-6


def test_measure_on_vela_target(hand_candidate, hand_tflite, tmp_path):
    target = get_target("vela")
    images = np.random.default_rng(3).random((20, 28, 28, 1), dtype=np.float32)
    labels = np.zeros(20, np.int64)
    record = measure_model(hand_tflite, read_tflite(hand_tflite), target, tmp_path, "hand", hand_candidate, images, labels)
    assert record["flash_bytes"] > 0 and record["sram_bytes"] > 0
    assert record["latency_is_estimate"] is True
    assert record["tflm_arena_bytes"] > 0
    assert record["accuracy_samples"] == 20 and 0.0 <= record["accuracy_int8"] <= 1.0
    assert record["empirical_entropy_bytes"] <= record["rhs_bound_bytes"]
    assert (tmp_path / "model_vela.tflite").is_file()


def test_operator_left_on_the_cpu_is_named(tmp_path):
    import tensorflow as tf

    model = tflite_of(lambda x: tf.math.sqrt(x), (1, 8, 8, 4))
    target = get_target("vela")
    with pytest.raises(HarnessError, match=r"cannot place 1 operator\(s\) on the NPU.*SQRT.*--allow-cpu-ops"):
        measure_model(model, read_tflite(model), target, tmp_path, "sqrt-model")
    record = measure_model(model, read_tflite(model), target, tmp_path, "sqrt-model", allow_cpu_ops=True)
    assert any(op.startswith("SQRT") for op in record["cpu_operators"])
