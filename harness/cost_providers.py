"""The cost providers the harness hands to search strategies: what a search cannot count itself
because it needs a compiler (``search.cost.OperatorCycles``)."""

from __future__ import annotations

import numpy as np

from core.candidate import Candidate


def vela_operator_cycles(candidate: Candidate, calibration: np.ndarray) -> list[tuple[str, float]]:
    """Vela's cycle estimate per operator of the candidate exported to int8 and compiled."""
    from harness.export import to_int8_tflite
    from targets.vela_compiler import per_operator_cycles

    return per_operator_cycles(to_int8_tflite(candidate, calibration))


PROVIDERS = {"operator_cycles": vela_operator_cycles}
