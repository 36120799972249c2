"""Accuracy on host TFLM in parallel: a batch split over worker processes gives the very outputs one
process gives, in order; a crash in one share is one failed measurement; the count is a setting."""

import numpy as np
import pytest

from core.supervised import NativeCrash, worker
from harness.config import load_config
from core.errors import UsageError
from targets import TARGETS, host_tflm
from targets.host_tflm import PARALLEL_MIN_INPUTS, HostTFLM


def _inputs(host: HostTFLM, count: int) -> np.ndarray:
    return np.random.default_rng(1).integers(-128, 128, (count, *host.input_shape[1:]), dtype=np.int8)


def test_outputs_in_parallel_are_those_of_one_process_in_order(hand_tflite, tmp_path):
    single = HostTFLM(hand_tflite, workers=1)
    inputs = _inputs(single, 301)
    expected = single.infer(inputs)
    for workers in (2, 3):
        parallel = HostTFLM(hand_tflite, workers=workers, log=tmp_path / "host-tflm.log")
        np.testing.assert_array_equal(parallel.infer(inputs), expected)
    assert {worker(f"{host_tflm.WORKER} {index}").pid is not None for index in (2, 3)} == {True}
    small = HostTFLM(hand_tflite, workers=3)
    np.testing.assert_array_equal(small.infer(inputs[:PARALLEL_MIN_INPUTS - 1]), expected[:PARALLEL_MIN_INPUTS - 1])


def test_a_crash_in_one_share_is_one_line_and_the_next_batch_runs(hand_tflite, monkeypatch):
    host = HostTFLM(hand_tflite, workers=2)
    inputs = _inputs(host, 200)
    expected = HostTFLM(hand_tflite, workers=1).infer(inputs)
    calls = []
    original = HostTFLM._call

    def second_share_crashes(self, function, *args, name=host_tflm.WORKER, **options):
        calls.append(name)
        if name != host_tflm.WORKER:  # the test double: the second process dies by a signal
            worker(name).call(_abort, label=self._label, doing="running 100 input(s) through")
        return original(self, function, *args, name=name, **options)

    monkeypatch.setattr(HostTFLM, "_call", second_share_crashes)
    with pytest.raises(NativeCrash, match=r"^host TFLM 2 aborted \(SIGABRT\) while running 100 input\(s\) through "
                                          r"model") as caught:
        host.infer(inputs)
    assert "\n" not in str(caught.value) and sorted(calls) == ["host TFLM", "host TFLM 2"]
    monkeypatch.setattr(HostTFLM, "_call", original)
    np.testing.assert_array_equal(host.infer(inputs), expected)  # a fresh worker takes the share


def _abort():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGABRT)


def test_the_worker_count_is_a_measure_setting_that_reaches_the_vela_target():
    assert load_config()["measure"]["host_workers"] == 0
    assert TARGETS["vela"].options(load_config(None, {"measure": {"host_workers": 3}}))["host_workers"] == 3
    with pytest.raises(UsageError, match=r"^measure.host_workers = -1; give 1 to 64 processes, or 0 for one per core$"):
        load_config(None, {"measure": {"host_workers": -1}})
