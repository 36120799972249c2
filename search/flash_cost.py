"""The predicted Flash of supernet configurations, exact and relaxed: ``core.flash_model``'s fitted
coefficients over features a configuration determines.

A layer's encoded bytes are its kept weight elements times a rate: the bytes per element Vela's weight
codec gives the layer's own weights at each (bits, nonzero) option, measured at full width with the
encoder the harness supplies (``WeightEncoder``: int8 codes OHWI, depthwise -> bytes; search encodes
nothing itself). Rates follow the weights: ``refresh`` measures them again (after pretraining, after the
search). Relaxed, a layer's rate is sum_ij z_b[i] z_s[j] rate[i, j], exact at one-hot samples and
differentiable in the relaxed options; channels scale with the expected widths.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from core.candidate import Candidate, layer_shapes
from core.flash_model import FlashModel
from search.space import GlobalAveragePool, GraphNet, SearchableLayer, magnitude_mask, quantize

WeightEncoder = Callable[[np.ndarray, bool], int]


def _codes(values: np.ndarray) -> np.ndarray:
    """The converter's per-tensor int8 codes (scale max|w| / 127)."""
    peak = float(np.abs(values).max())
    return np.zeros(values.shape, np.int16) if peak == 0.0 else np.round(values * (127.0 / peak)).astype(np.int16)


def int8_codes(weight: torch.Tensor) -> np.ndarray:
    """A searchable layer's deployed weight (torch layout) as int8 codes, OHWI."""
    codes = _codes(weight.detach().cpu().numpy())
    if codes.ndim == 2:  # dense [out, in]
        return codes.reshape(codes.shape[0], 1, 1, codes.shape[1])
    return np.ascontiguousarray(codes.transpose(0, 2, 3, 1))  # conv [out, in, k, k]; depthwise [c, 1, k, k]


def candidate_volumes(candidate: Candidate) -> list[tuple[np.ndarray, bool]]:
    """(int8 codes OHWI, depthwise) of every weight layer of a candidate (Keras layout)."""
    volumes = []
    for entry in candidate.weight_layers():
        weight = np.asarray(candidate.weights[f"{entry['name']}.weight"])
        codes = _codes(weight)
        if entry["op"] == "conv":  # [k, k, in, out]
            volumes.append((np.ascontiguousarray(codes.transpose(3, 0, 1, 2)), False))
        elif entry["op"] == "dwconv":  # [k, k, c, 1]
            volumes.append((np.ascontiguousarray(codes.transpose(2, 0, 1, 3)), True))
        else:  # dense [in, out]
            volumes.append((np.ascontiguousarray(codes.T.reshape(codes.shape[1], 1, 1, codes.shape[0])), False))
    return volumes


def _channel_owner(model: GraphNet, name: str) -> str:
    """The layer whose kept output channels ``name``'s output has (through depthwise layers, adds, pools)."""
    while name in model.layers:
        layer = model.layers[name]
        if isinstance(layer, SearchableLayer) and layer.op != "dwconv":
            return name
        name = model.sources[name][0]
    return name


class FlashCost:
    """Flash of configurations of ``model`` under ``flash_model``'s coefficients."""

    def __init__(self, model: GraphNet, flash_model: FlashModel, encoder: WeightEncoder):
        self.flash_model, self.encoder = flash_model, encoder
        self.pooled = {_channel_owner(model, model.sources[name][0]) for name, layer in model.layers.items()
                       if isinstance(layer, GlobalAveragePool)}
        self.rates: dict[str, dict[tuple, float]] = {}
        self.version = 0  # counts refreshes: a relaxed cost's tables are built for one version of the rates
        self.refresh(model)

    def refresh(self, model: GraphNet) -> None:
        """Measure every layer's encoded bytes per element at each (bits, nonzero) option from its weights."""
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                self.rates[name] = self._layer_rates(layer)
        self.version += 1

    def _layer_rates(self, layer: SearchableLayer) -> dict[tuple, float]:
        theta = layer.theta.detach()
        rates = {}
        with torch.no_grad():
            for bits in layer.bit_options or (None,):
                values = theta if bits is None else quantize(theta, bits, layer.ranges[str(bits)])
                for nonzero in layer.nonzero_options:
                    weight = values if nonzero >= 1.0 else values * magnitude_mask(theta, nonzero)
                    encoded = self.encoder(int8_codes(weight), layer.op == "dwconv")
                    rates[(bits, nonzero)] = encoded / theta.numel()
        return rates

    def rate(self, name: str, bits, nonzero: float) -> float:
        """Bytes per weight element of layer ``name`` at (bits, nonzero), or at its nearest measured option."""
        rates = self.rates[name]
        if (bits, nonzero) in rates:
            return rates[(bits, nonzero)]
        return rates[min(rates, key=lambda pair: (abs((pair[0] or 32) - (bits or 32)), abs(pair[1] - nonzero)))]

    def layer_bytes(self, name: str, layer: SearchableLayer, elements: int, kept_out: int, bits, nonzero: float) -> float:
        """A layer's share of the Flash: its encoded weights, its channels' scales (and a pool's, if one reads it)."""
        c = self.flash_model.coefficients
        channels = c["channels"] * kept_out + (c["pooled"] * kept_out if name in self.pooled else 0.0)
        return c["encoded"] * self.rate(name, bits, nonzero) * elements + channels

    def candidate_features(self, candidate: Candidate) -> dict[str, float]:
        """``core.flash_model`` features of a candidate's deployed weights."""
        volumes = candidate_volumes(candidate)
        shapes = layer_shapes(candidate.spec)
        pooled = sum(shapes[entry["name"]][-1] for entry in candidate.layers if entry["op"] == "gap")
        return {"encoded": float(sum(self.encoder(volume, depthwise) for volume, depthwise in volumes)),
                "channels": float(sum(volume.shape[0] for volume, _ in volumes)), "pooled": float(pooled)}

    def candidate_bytes(self, candidate: Candidate) -> float:
        """The predicted Flash of a candidate as deployed."""
        return self.flash_model.predict(self.candidate_features(candidate))

    def fixed(self) -> float:
        return self.flash_model.coefficients["fixed"]
