"""The UDC quantizer and its straight-through gradients: Q(theta, b, r) on a symmetric b-bit grid
(the UDC paper's Eq. 3), its offset form Q-hat whose grid starts at the pruning boundary (section 5), and
the clip range that minimises the quantization error."""

from __future__ import annotations

import torch

MIN_RANGE = 1e-8


class _Quantize(torch.autograd.Function):
    """Q(theta, b, r) for b > 1 as one autograd node (a search evaluates it for every option of every
    layer each step). Gradients: 1 to theta inside [-r, r], 0 outside (straight-through round); to r,
    (round(u) - u) / (2^(b-1) - 1) inside with u = theta / d, sign(theta) outside, 0 while r is held
    at MIN_RANGE: exactly those of d * round(clip(theta, -r, r) / d) with a straight-through round."""

    @staticmethod
    def forward(ctx, theta, value_range, levels):
        held = value_range <= MIN_RANGE
        value_range = value_range.clamp_min(MIN_RANGE)
        step = value_range / levels
        scaled = torch.minimum(torch.maximum(theta, -value_range), value_range) / step
        codes = torch.round(scaled)
        ctx.save_for_backward(theta, value_range, scaled, codes, held)
        ctx.levels = levels
        return codes * step

    @staticmethod
    def backward(ctx, grad):
        theta, value_range, scaled, codes, held = ctx.saved_tensors
        inside = theta.abs() < value_range
        grad_theta = grad * inside if ctx.needs_input_grad[0] else None
        grad_range = None
        if ctx.needs_input_grad[1]:
            per_element = torch.where(inside, (codes - scaled) / ctx.levels, torch.sign(theta))
            grad_range = torch.where(held, 0.0, (grad * per_element).sum())
        return grad_theta, grad_range, None


class _SignSTE(torch.autograd.Function):
    """sign() forward, hard-tanh backward (gradient only where |x| <= 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def quantize(theta: torch.Tensor, bits: int, value_range: torch.Tensor) -> torch.Tensor:
    """Eq. 3: Q(theta, b, r) = d * round(clip(theta, -r, r) / d), d = r / (2^(b-1) - 1).

    Gradients reach theta inside [-r, r] and reach r (LSQ-like: (round(u) - u) / (2^(b-1) - 1)
    inside the range, sign(theta) outside). For b == 1 the paper uses sign(theta) and relies on a
    following BatchNorm to rescale; BN is folded before finetuning here, so the learned range r is
    the scale: Q = r * sign(theta).
    """
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if bits == 1:
        value_range = value_range.clamp_min(MIN_RANGE)
        return value_range * _SignSTE.apply(theta / value_range.detach())
    return _Quantize.apply(theta, value_range, float(2 ** (bits - 1) - 1))


def quantize_offset(theta: torch.Tensor, bits: int, value_range: torch.Tensor,
                    offset: torch.Tensor | None) -> torch.Tensor:
    """Q-hat (the UDC paper's Sec. 5): Q(theta - sign(theta)*beta, b, r) + sign(theta)*beta, so the b-bit grid
    covers only magnitudes beyond the pruning boundary beta; plain Q when ``offset`` is None."""
    if offset is None:
        return quantize(theta, bits, value_range)
    direction = torch.sign(theta).detach()
    return quantize(theta - direction * offset, bits, value_range) + direction * offset


def best_range(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The clip level minimising ||Q(values, b, r) - values||^2 over a grid of 40 fractions of max|values|."""
    with torch.no_grad():
        trials = values.abs().max() * torch.linspace(0.05, 1.0, 40, device=values.device)
        errors = torch.stack([(quantize(values, bits, r) - values).square().sum() for r in trials])
        return trials[torch.argmin(errors)]
