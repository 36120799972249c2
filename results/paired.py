"""Accuracy judged on paired predictions, and what makes two evaluations comparable.

Two measurements of accuracy on the same test images are paired sample by sample: only the discordant
samples carry information (b: right before and wrong after, c: wrong before and right after), and
McNemar's exact test asks whether b and c differ more than a fair coin would make them (a two-sided
binomial test of b out of b + c at one half). One measurement a side suffices. Measurements whose
predictions are identical need no test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.predictions import decode


@dataclass
class PairedAccuracy:
    identical: bool  # the very same prediction for every sample
    worse: int  # b: right in the baseline, wrong in the candidate
    better: int  # c: wrong in the baseline, right in the candidate
    samples: int
    p_value: float  # McNemar's exact test; 1.0 for identical predictions

    @property
    def change(self) -> float:
        """The accuracy difference (candidate - baseline) these pairs make, as a fraction."""
        return (self.better - self.worse) / self.samples if self.samples else 0.0


def paired_accuracy(before: dict, after: dict) -> PairedAccuracy | None:
    """McNemar on two stored prediction arrays (``core.predictions``); None unless both decode and have the
    same number of samples."""
    first, second = decode(before), decode(after)
    if first is None or second is None or first[0].size != second[0].size:
        return None
    (classes_before, right_before), (classes_after, right_after) = first, second
    identical = bool(np.array_equal(classes_before, classes_after))
    worse = int(np.count_nonzero(right_before & ~right_after))
    better = int(np.count_nonzero(~right_before & right_after))
    p_value = 1.0 if identical or worse + better == 0 else mcnemar_exact(worse, better)
    return PairedAccuracy(identical, worse, better, int(classes_before.size), p_value)


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar p-value of ``worse`` against ``better`` discordant pairs."""
    from scipy.stats import binomtest

    return float(binomtest(worse, worse + better, 0.5).pvalue)


EVALUATION_PARTS = (("dataset", "dataset"), ("samples", "test images"), ("digest", "test image selection"),
                    ("calibration", "int8 calibration"))


def evaluation_difference(before: dict | None, after: dict | None) -> str | None:
    """What differs between two measurements' evaluations (``Pipeline`` stores each row's), in words; None
    when they agree or either is unknown (rows stored before evaluations were)."""
    if not before or not after:
        return None
    for key, words in EVALUATION_PARTS:
        if before.get(key) != after.get(key):
            if key in ("digest", "calibration"):
                return f"the {words} differs"
            return f"{words} {before.get(key)} vs {after.get(key)}"
    return None
