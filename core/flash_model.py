"""The Flash cost model: Vela's Flash figure of a compiled network from four features of it.

Flash (Vela's read-only peak) = a * encoded + c * channels + p * pooled + f, where ``encoded`` is the
weights as Vela's weight codec encodes them (its brick order, per layer), ``channels`` the output
channels of every weight layer (Vela keeps 10 bytes of scale, shift and bias per channel), ``pooled``
the channels a global average pool reads (Vela lowers it to a depthwise convolution with its own
scales) and ``f`` what is left (alignment, tables). The coefficients are fitted by least squares to
Vela's figures for networks of one supernet, compiled for one accelerator, system config, memory mode
and Vela version (``key``); docs/budgets.md gives the measured fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("encoded", "channels", "pooled", "fixed")
NOMINAL = {"encoded": 1.0, "channels": 10.0, "pooled": 10.0, "fixed": 0.0}  # before any fit: Vela's layout


@dataclass(frozen=True)
class FlashModel:
    coefficients: dict[str, float]
    key: str = ""  # what it was fitted for: accelerator, system config, memory mode, Vela version
    samples: int = 0  # compiles it was fitted to
    worst_error: float | None = None  # its largest relative error on them

    def predict(self, features: dict[str, float]) -> float:
        """Bytes of Flash for ``features`` (``encoded``, ``channels``, ``pooled``; ``fixed`` is 1)."""
        return float(sum(self.coefficients[name] * features.get(name, 1.0 if name == "fixed" else 0.0)
                         for name in FEATURES))

    @classmethod
    def fit(cls, samples: list[tuple[dict[str, float], float]], key: str = "") -> "FlashModel":
        """Least squares over (features, Vela's Flash) pairs; needs at least as many samples as features."""
        if len(samples) < len(FEATURES):
            raise ValueError(f"a Flash model needs at least {len(FEATURES)} compiled networks, got {len(samples)}")
        design = np.array([[features.get(name, 1.0 if name == "fixed" else 0.0) for name in FEATURES]
                           for features, _ in samples], dtype=float)
        flash = np.array([value for _, value in samples], dtype=float)
        solution, *_ = np.linalg.lstsq(design, flash, rcond=None)
        model = cls(dict(zip(FEATURES, (float(v) for v in solution))), key, len(samples))
        worst = max(abs(model.predict(features) - value) / value for features, value in samples)
        return cls(model.coefficients, key, len(samples), float(worst))

    def to_meta(self) -> dict:
        return {"coefficients": self.coefficients, "key": self.key, "samples": self.samples,
                "worst_error": self.worst_error}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "FlashModel | None":
        if not meta or not isinstance(meta.get("coefficients"), dict):
            return None
        coefficients = meta["coefficients"]
        if set(coefficients) != set(FEATURES) or not all(isinstance(v, (int, float)) for v in coefficients.values()):
            return None
        return cls({k: float(v) for k, v in coefficients.items()}, str(meta.get("key", "")),
                   int(meta.get("samples", 0)), meta.get("worst_error"))
