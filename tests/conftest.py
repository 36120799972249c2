import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

# Property-based tests: the default run is derandomized (the same examples every time, so CI is
# repeatable); the nightly profile draws fresh examples, 500 where a test sets no count of its own.
# HYPOTHESIS_PROFILE=nightly selects it (.ci/nightly does).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", derandomize=False, deadline=None, print_blob=True, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def calibration():
    return np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="session")
def hand_candidate():
    from tests.candidates import make_candidate

    return make_candidate(bits=4, nonzero=0.5)


@pytest.fixture(scope="session")
def hand_tflite(hand_candidate, calibration):
    from harness.export import to_int8_tflite

    return to_int8_tflite(hand_candidate, calibration)


@pytest.fixture(scope="session")
def hand_tflite_file(hand_tflite, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "hand.tflite"
    path.write_bytes(hand_tflite)
    return path
