"""Harness overhead and cache benchmarks: ratios against baselines timed in the same run.

- Measuring a candidate on vela through the pipeline (export with its exactness checks, Vela, the stored
  row) against what a user would write by hand (Keras model, converter, Vela in-process): goal at most 1.3x.
- A cache hit (the same candidate measured again) against its first measurement: goal at most 0.05x.

Run with ``tox -e bench``; the ratios and goals land in the benchmark JSON as extra_info.
"""

import statistics
import time

import numpy as np
import pytest

from harness.pipeline import Evaluation, Pipeline
from results.store import Store
from targets import get_target
from tests.bench.goals import assert_goal
from tests.candidates import make_candidate

ROUNDS = 5
OVERHEAD_GOAL = 1.3
CACHE_HIT_GOAL = 0.05


def _by_hand(candidate, calibration):
    """What a user would write without the harness: Keras model -> converter -> Vela in-process."""
    import tensorflow as tf
    from ethosu import regor

    from targets.vela_compiler import VelaSettings, config_file
    from harness.export import build_keras

    model = build_keras(candidate)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True
    flatbuffer = converter.convert()
    settings = VelaSettings()
    system = ("[architecture]\nmacs=128\ncores=1\n[vela]\n"
              f"system_config_name={settings.system_config}\nmemory_mode_name={settings.memory_mode}\n"
              + config_file().read_text())
    return regor.compile("EthosU55", flatbuffer, "TFLITE", system, options="", verbose=False)


def _median_seconds(function, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.fixture
def pipeline(tmp_path):
    store = Store.for_output_dir(tmp_path)
    calibration_set = Evaluation(None, 0)
    yield Pipeline(tmp_path, store, get_target("vela"), calibration_set, calibration_samples=100, force=True)
    store.close()


def test_measure_overhead_vs_conversion_and_vela_by_hand(benchmark, pipeline):
    candidate = make_candidate(bits=4, nonzero=0.5)
    calibration = pipeline.calibration_images(tuple(candidate.spec["input_shape"]))
    _by_hand(candidate, calibration)  # warm imports for both sides
    pipeline.measure_candidate(candidate)
    baseline = _median_seconds(lambda: _by_hand(candidate, calibration))
    benchmark.pedantic(pipeline.measure_candidate, args=(candidate,), rounds=ROUNDS, iterations=1)
    ratio = benchmark.stats.stats.median / baseline
    benchmark.extra_info.update(baseline_median_s=baseline, measure_median_s=benchmark.stats.stats.median)
    print(f"\nmeasure overhead: harness {benchmark.stats.stats.median:.3f} s vs by hand {baseline:.3f} s = "
          f"{ratio:.2f}x (goal <= {OVERHEAD_GOAL}x)")
    assert_goal(benchmark, ratio, OVERHEAD_GOAL)


def test_cache_hit_vs_first_measure(benchmark, tmp_path):
    candidate = make_candidate(bits=4, nonzero=0.5, seed=7)
    with Store.for_output_dir(tmp_path) as store:
        evaluation = Evaluation(None, 0)
        first_pipeline = Pipeline(tmp_path, store, get_target("vela"), evaluation, calibration_samples=100)
        first_pipeline.measure_candidate(make_candidate(bits=8, nonzero=1.0, seed=1))  # warm imports
        started = time.perf_counter()
        first = first_pipeline.measure_candidate(candidate)
        first_seconds = time.perf_counter() - started
        assert first["cached"] is False
        again = benchmark.pedantic(first_pipeline.measure_candidate, args=(candidate,), rounds=ROUNDS, iterations=1)
        assert again["cached"] is True and again["flash_bytes"] == first["flash_bytes"]
        ratio = benchmark.stats.stats.median / first_seconds
        benchmark.extra_info.update(first_measure_s=first_seconds, cache_hit_median_s=benchmark.stats.stats.median)
        print(f"\ncache: re-measure {benchmark.stats.stats.median * 1e3:.1f} ms vs first {first_seconds:.3f} s = "
              f"{ratio:.4f}x (goal <= {CACHE_HIT_GOAL}x)")
        np.testing.assert_equal(again["candidate_hash"], candidate.content_hash)
        assert_goal(benchmark, ratio, CACHE_HIT_GOAL)
