"""The parameter-free layers of a network: the residual add (with the gate of a depth decision) and the
global average pool."""

from __future__ import annotations

import torch
from torch import nn

from search.space.layers import ACTIVATIONS


class Add(nn.Module):
    """a + b, where b is a residual branch, then the activation. A depth decision's ``gate`` ([S], relaxed:
    z[block] per sample group) mixes the two options' outputs, as the UDC paper relaxes a choice between
    operators: z[block] * act(a + f(a)) + z[identity] * a. For a linear add that is a + z[block] * f(a),
    which the plan may fold into the branch's weights (``gated``); after a ReLU it is not.

    ``shortcut_scale`` ([S]): a search's dropout of the shortcut, the identity option's path. With a gate it
    is z[block] + z[identity] * kept (kept 0 or 1), so z[identity] * kept = shortcut_scale - gate."""

    op = "add"

    def __init__(self, activation: str = "none"):
        super().__init__()
        self.activation = activation
        self.gate: torch.Tensor | None = None
        self.shortcut_scale: torch.Tensor | None = None

    def relaxed_samples(self) -> int:
        return max((scale.shape[0] for scale in (self.gate, self.shortcut_scale) if scale is not None), default=1)

    def forward(self, a, b, sample: int | None = None, gated: bool = False):
        """``sample`` = i: a and b are sample group i alone (see ``SearchableLayer.forward``); ``gated``: the
        branch b comes with the gate already applied (``relaxed_plan`` moves it into the branch's weights)."""
        activation = ACTIVATIONS[self.activation]
        shortcut = _scaled(a, self.shortcut_scale, sample)
        if self.gate is None or gated:
            return activation(shortcut + b)
        if self.activation == "none":
            return shortcut + _scaled(b, self.gate, sample)
        kept = 1.0 if self.shortcut_scale is None else self.shortcut_scale
        return _scaled(activation(a + b), self.gate, sample) + _scaled(a, kept - self.gate, sample)


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
