"""Firmware turnaround and instruction counts on qemu-an547 (skip without a TFLM checkout and its library).

- Per candidate with a warm TFLM library (build + boot + 10 timed inferences) against the same steps for
  the no-model firmware (toolchain and emulator alone), as a ratio.
- The cold first build: TFLM's library built from a copy of the checkout into an empty cache, then the
  same turnaround (slow: minutes, paid once per checkout and flags).
- Instructions per inference are deterministic (two runs within 1 tick); CMSIS-NN vs reference kernels.
"""

import shutil
import time

import pytest

from harness import firmware
from targets.qemu_an547 import QemuAn547Target, QemuSession
from tests.candidates import make_candidate

TARGET = QemuAn547Target()
pytestmark = pytest.mark.skipif(TARGET.available() is not None, reason=f"qemu-an547: {TARGET.available()}")


def _tflite():
    import numpy as np

    from harness.export import to_int8_tflite

    return to_int8_tflite(make_candidate(bits=4, nonzero=0.5), np.random.default_rng(0).random((32, 28, 28, 1), np.float32))


def _turnaround(target, tflite, workdir):
    started = time.perf_counter()
    target.prepare(tflite, workdir, "bench")
    counters = target.counters()
    target.close()
    return time.perf_counter() - started, counters


def test_warm_turnaround_vs_the_no_model_firmware(benchmark, tmp_path):
    tflite = _tflite()
    started = time.perf_counter()
    with QemuSession(firmware.build(tmp_path / "none")) as session:
        session.link.profile()
    baseline = time.perf_counter() - started
    rounds = iter(range(100))
    benchmark.pedantic(lambda: _turnaround(TARGET, tflite, tmp_path / f"model-{next(rounds)}"), rounds=3, iterations=1)
    ratio = benchmark.stats.stats.median / baseline
    benchmark.extra_info.update(no_model_s=baseline, warm_turnaround_s=benchmark.stats.stats.median, ratio=ratio)
    print(f"\nwarm turnaround (build + boot + 10 inferences) {benchmark.stats.stats.median:.1f} s vs no-model build + "
          f"boot {baseline:.1f} s = {ratio:.1f}x")
    assert benchmark.stats.stats.median < 60


def test_instructions_are_deterministic_and_cmsis_nn_beats_reference(benchmark, tmp_path):
    tflite = _tflite()
    counts = [_turnaround(TARGET, tflite, tmp_path / f"run-{i}")[1]["instructions"] for i in range(2)]
    assert abs(counts[0] - counts[1]) <= 1
    benchmark.extra_info["cmsis_nn_instructions"] = counts[0]
    reference = QemuAn547Target(kernels="reference")
    if reference.available() is not None:
        pytest.skip(f"reference kernels: {reference.available()}")
    _, counters = benchmark.pedantic(lambda: _turnaround(reference, tflite, tmp_path / "reference"), rounds=1,
                                     iterations=1)
    ratio = counters["instructions"] / counts[0]
    benchmark.extra_info.update(reference_instructions=counters["instructions"], reference_vs_cmsis_nn=ratio)
    print(f"\ninstructions per inference: CMSIS-NN {counts[0]}, reference {counters['instructions']} ({ratio:.1f}x)")
    assert counters["bit_exact"] and ratio > 1


@pytest.mark.slow
def test_cold_first_build_vs_warm_turnaround(benchmark, tmp_path, monkeypatch):
    tflite = _tflite()
    checkout = tmp_path / "tflm"  # without gen/, so the checkout's own library is not found
    shutil.copytree(TARGET.tflm_root, checkout, ignore=lambda folder, names: ["gen"] if folder == str(TARGET.tflm_root)
                    else [], symlinks=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cold_target = QemuAn547Target(tflm_root=str(checkout))

    def cold():
        started = time.perf_counter()
        firmware.build_tflm(checkout, "cmsis_nn")
        return time.perf_counter() - started, _turnaround(cold_target, tflite, tmp_path / "cold")

    library_s, (turnaround_s, counters) = benchmark.pedantic(cold, rounds=1, iterations=1)
    warm_s, warm_counters = _turnaround(cold_target, tflite, tmp_path / "warm")
    benchmark.extra_info.update(cold_library_s=library_s, cold_total_s=library_s + turnaround_s, warm_s=warm_s)
    print(f"\ncold first build {library_s + turnaround_s:.0f} s (TFLM library {library_s:.0f} s) "
          f"vs warm {warm_s:.1f} s")
    assert abs(warm_counters["instructions"] - counters["instructions"]) <= 1 and warm_s < library_s
