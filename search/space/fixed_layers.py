"""The parameter-free layers of a network: the residual add (with the gate of a depth decision) and the
global average pool."""

from __future__ import annotations

import torch
from torch import nn

from search.space.layers import ACTIVATIONS


class Add(nn.Module):
    """a + b, where b is a residual branch. ``gate`` ([S], relaxed) scales the branch per sample group:
    z[block] * (a + f(a)) + z[identity] * a = a + z[block] * f(a) for a linear add."""

    op = "add"

    def __init__(self, activation: str = "none"):
        super().__init__()
        self.activation = activation
        self.gate: torch.Tensor | None = None
        self.shortcut_scale: torch.Tensor | None = None  # [S]: a search's dropout of the shortcut

    def relaxed_samples(self) -> int:
        return max((scale.shape[0] for scale in (self.gate, self.shortcut_scale) if scale is not None), default=1)

    def forward(self, a, b, sample: int | None = None, gated: bool = False):
        """``sample`` = i: a and b are sample group i alone (see ``SearchableLayer.forward``); ``gated``: the
        branch b comes with the gate already applied (``relaxed_plan`` moves it into the branch's weights)."""
        branch = b if gated else _scaled(b, self.gate, sample)
        return ACTIVATIONS[self.activation](_scaled(a, self.shortcut_scale, sample) + branch)


def _row(per_sample: torch.Tensor, sample: int | None) -> torch.Tensor:
    """Sample ``sample``'s row of a per-sample tensor [S or 1, ...] (the only row when S is 1 or no sample is named)."""
    return per_sample[0 if sample is None or per_sample.shape[0] == 1 else sample]


def _scaled(x: torch.Tensor, scale: torch.Tensor | None, sample: int | None) -> torch.Tensor:
    """x times scale[i] for its sample group i: all S groups of x, or group ``sample`` alone."""
    if scale is None:
        return x
    if sample is not None:
        return x * _row(scale, sample)
    samples = scale.shape[0]
    return (x.view(samples, -1, *x.shape[1:]) * scale.view(samples, *([1] * x.dim()))).view_as(x)


class GlobalAveragePool(nn.Module):
    op = "gap"

    def forward(self, x):
        return x.mean(dim=(2, 3))
