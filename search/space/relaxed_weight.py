"""Searchable layers' relaxed weights, many layers in one autograd node: for each layer and each of S samples,

    W[s] = (sum_k z_b[s, k] Q(theta, b_k, r_k)) * (sum_j z_s[s, j] m_j)

with Q the UDC quantizer (``quantizers.quantize``, its straight-through gradients included) and m_j the
magnitude masks of the nonzero options. The layers' weights are laid end to end (N elements) and every bit
option computed at once, so forward and backward are a few dozen operations on [K, N] and [K, S, N]
tensors for the whole network. Composing ``quantize`` per option and layer builds about twenty autograd
nodes per layer and step; at the supernets' sizes a step's cost is the count of its operations, not their
arithmetic.

Every option's gradient is computed, also of options a top-kappa sample zeroes in the forward pass: the
straight-through estimator of the UDC paper's appendix D (eq. 12) passes dL/dz-hat = dL/dz to all of them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from search.space.quantizers import MIN_RANGE


def quantizer_levels(bits: tuple[int, ...]) -> torch.Tensor:
    """2^(b-1) - 1 per bit option; 1 for a 1-bit option, whose quantizer is r * sign(theta)."""
    return torch.tensor([float(max(1, 2 ** (b - 1) - 1)) for b in bits])


class WeightInputs(NamedTuple):
    """One layer's part of ``relaxed_weights``: theta; r_k per bit option (0-d tensors) with the options'
    ``levels`` ([K], ``quantizer_levels``) and ``one_bit`` (indices of 1-bit options); ``z_bits`` [S or 1, K]
    weighing them; ``masks`` [J, theta.numel()], the nonzero options' masks, weighed by ``z_nonzero``
    [S or 1, J]. A fixed choice is a one-option list with z = [[1.0]]."""

    theta: torch.Tensor
    ranges: list[torch.Tensor]
    levels: torch.Tensor
    one_bit: tuple[int, ...]
    z_bits: torch.Tensor
    masks: torch.Tensor
    z_nonzero: torch.Tensor

    def signature(self) -> tuple:
        """Layers of one signature go through ``relaxed_weights`` together."""
        return (tuple(self.levels.tolist()), self.one_bit, self.masks.shape[0], self.z_bits.shape[0],
                self.z_nonzero.shape[0], self.theta.dtype, self.theta.device)


class _Layout(NamedTuple):
    shapes: list[torch.Size]
    sizes: list[int]  # elements per layer
    one_bit: tuple[int, ...]


def _spread(per_layer: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """[K, L] -> [K, N]: each layer's value repeated over its elements. (Expanded slices joined by one
    copy: on CPU 30x faster than repeat_interleave's index_select along the last dimension.)"""
    return torch.cat([per_layer[:, i:i + 1].expand(-1, size) for i, size in enumerate(layout.sizes)], 1)


def _mixed(weighings: tuple[torch.Tensor, ...], values: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """[S, N]: sum_k z_l[s, k] values[k, n] over each layer l's elements n, z_l [S, K] (one product a layer:
    on CPU cheaper than spreading z over the elements)."""
    return torch.cat([z @ part for z, part in zip(weighings, values.split(layout.sizes, 1))], 1)


def _per_layer(grad: torch.Tensor, values: torch.Tensor, layout: _Layout) -> list[torch.Tensor]:
    """[S, K] per layer l: sum_n grad[s, n] values[k, n] over its elements (the gradient of ``_mixed``'s z)."""
    return [g @ part.T for g, part in zip(grad.split(layout.sizes, 1), values.split(layout.sizes, 1))]


class _RelaxedWeights(torch.autograd.Function):
    # The forward pass also prepares what the backward pass needs per option and element, so the backward
    # pass reads each of those tensors once. Float arithmetic throughout: on CPU, torch.where and boolean
    # masks over these tensors cost 3-10x a multiply.
    @staticmethod
    def forward(ctx, layout, levels, *tensors):
        count = len(layout.sizes)
        thetas, z_bits, z_nonzero = tensors[:count], tensors[count:2 * count], tensors[2 * count:3 * count]
        masks, ranges = tensors[3 * count:4 * count], tensors[4 * count:]
        flat = torch.cat([theta.reshape(-1) for theta in thetas]).unsqueeze(0)  # [1, N]
        raw = torch.stack(ranges).view(count, -1).T  # [K, L]
        step = _spread(raw.clamp_min(MIN_RANGE) / levels.unsqueeze(1), layout)  # d = r / levels, [K, N]
        bound = levels.unsqueeze(1)  # clip(theta, -r, r) / d = clip(theta / d, -levels, levels)
        unclipped = flat / step
        scaled = torch.minimum(torch.maximum(unclipped, -bound), bound)  # faster than clamp with tensor bounds
        codes = torch.round(scaled)
        for k in layout.one_bit:  # r * sign(theta)
            codes[k] = torch.sign(scaled[k])
        options = codes * step  # Q(theta, b_k, r_k), [K, N]
        quantized = _mixed(z_bits, options, layout)  # [S_b, N]
        all_masks = torch.cat(masks, 1)  # [J, N]
        mask = _mixed(z_nonzero, all_masks, layout)  # [S_s, N]
        if any(ctx.needs_input_grad):
            # dQ_k/dtheta: 1 where |theta| < r_k (<= r_k for the 1-bit sign, as its hard-tanh gradient)
            magnitude, sign = unclipped.abs_(), torch.sign(flat)
            inside = (bound - magnitude).sign_().clamp_min_(0.0)
            # dQ_k/dr_k: (round(u) - u) / levels inside the range, sign(theta) outside; 0 while r_k is held
            slope = (codes - scaled).div_(bound).sub_(sign).mul_(inside).add_(sign)
            for k in layout.one_bit:
                inside[k] = 1.0 - (magnitude[k] - 1.0).sign_().clamp_min_(0.0)
                slope[k] = sign[0]
            held = raw <= MIN_RANGE
            if bool(held.any()):
                slope.mul_(_spread((~held).to(slope.dtype), layout))
            ctx.save_for_backward(*z_bits, all_masks, options, quantized, mask, inside, slope)
        ctx.layout, ctx.samples = layout, (z_bits[0].shape[0], z_nonzero[0].shape[0])
        return quantized * mask  # [S, N]

    @staticmethod
    def backward(ctx, grad):
        layout, (bits_samples, nonzero_samples) = ctx.layout, ctx.samples
        count = len(layout.sizes)
        saved = ctx.saved_tensors
        z_bits, (all_masks, options, quantized, mask, inside, slope) = saved[:count], saved[count:]
        grad_quantized = _summed_to(grad * mask, bits_samples)  # [S_b, N]
        grad_z_bits = _per_layer(grad_quantized, options, layout)
        grad_z_nonzero = _per_layer(_summed_to(grad * quantized, nonzero_samples), all_masks, layout)
        weighed = torch.cat([z.T @ g for z, g in zip(z_bits, grad_quantized.split(layout.sizes, 1))], 1)  # [K, N]
        grad_theta = (weighed * inside).sum(0)  # sum_k z_b[k] dQ_k/dtheta, over the samples
        # [L, K]: sum over each layer's elements of sum_s z_b[s, k] g_s dQ_k/dr_k
        grad_ranges = torch.stack([part.sum(1) for part in weighed.mul_(slope).split(layout.sizes, 1)])
        thetas = [part.view(shape) for part, shape in zip(grad_theta.split(layout.sizes), layout.shapes)]
        return (None, None, *thetas, *grad_z_bits, *grad_z_nonzero, *([None] * count), *grad_ranges.reshape(-1).unbind())


def _summed_to(grad: torch.Tensor, samples: int) -> torch.Tensor:
    """A gradient [S, N] summed over the samples an input of ``samples`` rows was broadcast to."""
    return grad if grad.shape[0] == samples else grad.sum(0, keepdim=True)


def relaxed_weights(layers: list[WeightInputs]) -> list[torch.Tensor]:
    """[S, *theta.shape] per layer: W[s] above, for layers of one ``signature()``."""
    first = layers[0]
    sizes = [part.theta.numel() for part in layers]
    layout = _Layout([part.theta.shape for part in layers], sizes, first.one_bit)
    tensors = [*(p.theta for p in layers), *(p.z_bits for p in layers), *(p.z_nonzero for p in layers),
               *(p.masks for p in layers), *(r for p in layers for r in p.ranges)]
    weights = _RelaxedWeights.apply(layout, first.levels, *tensors)  # [S, N]
    return [part.reshape(-1, *p.theta.shape) for part, p in zip(weights.split(sizes, dim=1), layers)]


def sample_groups(batch: torch.Tensor, samples: int) -> tuple[torch.Tensor, ...]:
    """A relaxed batch's S equal groups of images, group i for sample i; a batch that does not split is an error."""
    if batch.shape[0] % samples:
        raise ValueError(f"a batch of {batch.shape[0]} does not split into {samples} equal sample groups")
    return batch.chunk(samples)


class SampleParameters(NamedTuple):
    """A relaxed layer's parameters for one sample: its weight and bias, and the per-channel scale its output
    is multiplied by after the activation (None: nothing to multiply, or a width scale taken elsewhere)."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor | None


def per_sample(samples: int, weights: torch.Tensor, biases: torch.Tensor,
               scales: torch.Tensor | None) -> list[SampleParameters]:
    """Tensors of S or 1 rows as ``samples`` SampleParameters (one autograd node per tensor, not per sample)."""

    def rows(tensor):
        if tensor is None:
            return [None] * samples
        return tensor.unbind(0) if tensor.shape[0] == samples else [tensor.squeeze(0)] * samples

    return [SampleParameters(*row) for row in zip(rows(weights), rows(biases), rows(scales))]
