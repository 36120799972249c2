"""Searchable layers: one weight tensor theta shared by every width, bitwidth and sparsity option of a
layer (the parameter-free layers of a network are in ``fixed_layers``).

Every layer takes NCHW tensors; convolutions pad like TensorFlow's SAME, which the Keras export uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search.space.masks import kept_count, magnitude_mask, width_mask
from search.space.quantizers import MIN_RANGE, best_range, quantize, quantize_offset
from search.space.relaxed_weight import (SampleParameters, WeightInputs, per_sample, quantizer_levels, relaxed_weights,
                                         sample_groups)

ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "relu6": F.relu6}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis; the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2



class SearchableLayer(nn.Module):
    """One weight tensor theta shared by every width, bitwidth and sparsity option of the layer.

    output = act(f(x, Q(theta, b, r_b) * m) + bias) * w, with m the magnitude mask (recomputed from
    theta by ``refresh_mask``) and w the width mask on output channels. ``bits=None`` means float.
    Each bitwidth option has its own learned range r_b (``ranges[str(b)]``). An optional BatchNorm
    sits before the activation for float pretraining and is folded away by ``fold_batchnorm``.
    """

    op = ""

    def __init__(self, in_channels: int, out_channels: int, theta_shape: Sequence[int], activation: str = "none",
                 batchnorm: bool = False, bit_options: Iterable[int] = (), nonzero_options: Iterable[float] = (1.0,),
                 width_options: Iterable[float] = (1.0,)):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.bit_options = tuple(int(b) for b in bit_options)
        self.nonzero_options = tuple(float(s) for s in nonzero_options)
        self.width_options = tuple(float(w) for w in width_options)
        self.theta = nn.Parameter(torch.empty(*theta_shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._init_theta()
        self.ranges = nn.ParameterDict({
            str(b): nn.Parameter(self.theta.detach().abs().max().clone()) for b in self.bit_options})
        self.batchnorm = self._make_batchnorm(out_channels) if batchnorm else None
        self.register_buffer("mask", None, persistent=False)
        self.register_buffer("option_masks", None, persistent=False)
        self.register_buffer("width_option_masks", None, persistent=False)  # [K, C], made on first use
        self.register_buffer("levels", quantizer_levels(self.bit_options), persistent=False)
        self.one_bit = tuple(k for k, b in enumerate(self.bit_options) if b == 1)
        self.bits: int | None = None
        self.nonzero = 1.0
        self.width = 1.0
        self.kept_in = in_channels  # input channels the layer feeding this one keeps (GraphNet.set_kept_inputs)
        self.relaxed: dict[str, torch.Tensor] = {}
        self.quantize_probability = 1.0  # alpha of the finetuning quantization noise; 1 = always quantize
        self.pruning_offset = False  # quantize with Q-hat, offset by the largest pruned |theta|

    def _init_theta(self) -> None:
        nn.init.kaiming_normal_(self.theta, mode="fan_out", nonlinearity="relu")

    def _make_batchnorm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's operation with ``weight`` and ``bias`` (default: this layer's bias)."""
        raise NotImplementedError

    def _channel_view(self, vector: torch.Tensor) -> torch.Tensor:
        """Reshape a per-output-channel vector to broadcast over this layer's output."""
        return vector.view(1, -1, 1, 1)

    # -- choices

    def select(self, bits: int | None = None, nonzero: float = 1.0, width: float = 1.0) -> None:
        """Fix this layer's options, each one of its option lists (bits None = float; nonzero and width 1.0 always)."""
        if bits is not None and bits not in self.bit_options:
            raise ValueError(f"bits={bits} is not an option of this layer ({self.bit_options})")
        if nonzero != 1.0 and nonzero not in self.nonzero_options:
            raise ValueError(f"nonzero={nonzero} is not an option of this layer ({self.nonzero_options})")
        if width != 1.0 and width not in self.width_options:
            raise ValueError(f"width={width} is not an option of this layer ({self.width_options})")
        self.bits, self.nonzero, self.width = bits, float(nonzero), float(width)
        self.mask = None

    def kept_slice(self) -> tuple[slice, ...]:
        """The part of theta the selected widths deploy: the kept output channels and, but for a depthwise
        layer, the input channels its source keeps (``kept_in``)."""
        rows = slice(0, self.kept_out_channels())
        return (rows,) if self.op == "dwconv" else (rows, slice(0, self.kept_in))

    def kept_magnitude_mask(self, fraction: float) -> torch.Tensor:
        """Boolean mask keeping exactly kept_count(N_kept, s) largest-|theta| elements of the kept slice
        (N_kept its elements) and nothing outside it, so the deployed tensor holds the chosen fraction
        whatever the channels the width slices away hold."""
        region = self.kept_slice()
        if self.theta[region].numel() == self.theta.numel():
            return magnitude_mask(self.theta, fraction)
        mask = torch.zeros_like(self.theta, dtype=torch.bool)
        mask[region] = magnitude_mask(self.theta[region], fraction)
        return mask

    def refresh_mask(self, nonzero: float | None = None) -> None:
        """Recompute the magnitude mask from |theta| on the kept slice; ``nonzero`` overrides the selected
        fraction (pruning anneal)."""
        fraction = self.nonzero if nonzero is None else nonzero
        # Stored in theta's dtype so the forward multiplies without a conversion per step.
        self.mask = None if fraction >= 1.0 else self.kept_magnitude_mask(fraction).to(self.theta.dtype)

    def refresh_option_masks(self) -> None:
        """Recompute one magnitude mask per nonzero option from |theta|, for relaxed forwards: over all of
        theta, as the widths are relaxed too (``refresh_mask`` ranks the slice the selected widths keep)."""
        self.option_masks = torch.stack([
            torch.ones_like(self.theta) if s >= 1.0 else magnitude_mask(self.theta, s).to(self.theta.dtype)
            for s in self.nonzero_options]).detach()

    def relax(self, bits: torch.Tensor | None = None, nonzero: torch.Tensor | None = None,
              width: torch.Tensor | None = None) -> None:
        """Relaxed choices, each [S, K] over this layer's bit_options / nonzero_options / width_options.

        The batch is split into S equal groups and group i uses sample i's choices. A choice left None
        keeps the selected option. ``relax()`` with no arguments returns to the selected options.
        """
        given = {"bits": (bits, self.bit_options), "nonzero": (nonzero, self.nonzero_options),
                 "width": (width, self.width_options)}
        samples = {z.shape[0] for z, _ in given.values() if z is not None}
        if len(samples) > 1:
            raise ValueError(f"relaxed choices disagree on the number of samples: {sorted(samples)}")
        for axis, (z, options) in given.items():
            if z is not None and z.shape[-1] != len(options):
                raise ValueError(f"{axis} choice has {z.shape[-1]} entries for {len(options)} options {options}")
        if nonzero is not None and self.option_masks is None:
            self.refresh_option_masks()
        self.relaxed = {axis: z for axis, (z, _) in given.items() if z is not None}

    def init_option_ranges(self) -> None:
        """Every bitwidth option's range at the clip level minimising ||Q(theta) - theta||^2."""
        for bits in self.bit_options:
            self.ranges[str(bits)].data.copy_(best_range(self.theta.detach(), bits))

    def init_range(self, nonzero: float | None = None) -> None:
        """Set the selected bitwidth's range to the clip level minimising ||(Q(theta) - theta) * m||^2 (grid
        search); ``nonzero`` overrides the selected fraction the mask m keeps."""
        if self.bits is None:
            return
        nonzero = self.nonzero if nonzero is None else nonzero
        with torch.no_grad():
            theta = self.theta[self.kept_slice()]  # what the selected widths deploy
            if nonzero >= 1.0:
                kept = theta
            else:
                mask = magnitude_mask(theta, nonzero)
                kept = theta[mask]
                if self.pruning_offset:  # Q-hat quantizes the magnitude beyond the pruning boundary
                    kept = kept.abs() - theta[~mask].abs().max()
            self.ranges[str(self.bits)].copy_(best_range(kept, self.bits))

    # -- forward and deployment

    def pruning_boundary(self) -> torch.Tensor:
        """beta: the largest pruned |theta| of the kept slice (0 without a mask)."""
        if self.mask is None:
            return torch.zeros((), dtype=self.theta.dtype, device=self.theta.device)
        region = self.kept_slice()
        return (self.theta.detach()[region].abs() * (1 - self.mask[region])).max()

    def compressed_weight(self, noise: bool = True) -> torch.Tensor:
        """Q(theta) * m (Q-hat with ``pruning_offset``); in training, quantization noise unless ``noise`` is off."""
        weight = self.theta
        if self.bits is not None:
            value_range = self.ranges[str(self.bits)]
            offset = self.pruning_boundary() if self.pruning_offset else None
            quantized = quantize_offset(weight, self.bits, value_range, offset)
            if noise and self.training and self.quantize_probability < 1.0:
                # Sec. 5: the unquantized share is clipped to the quantizer's range, not left as theta.
                limit = value_range.clamp_min(MIN_RANGE) + (0.0 if offset is None else offset)
                clipped = torch.minimum(torch.maximum(weight, -limit), limit)
                noise = torch.rand_like(weight) < self.quantize_probability
                quantized = torch.where(noise, quantized, clipped)
            weight = quantized
        if self.mask is not None:
            weight = weight * self.mask
        return weight

    def deployed_weight(self) -> torch.Tensor:
        """The weight as deployed: with Q-hat, Q(Q-hat, 8, r') with r' = max|Q-hat|, so the tensor is on a
        symmetric int8 grid holding at most 2^b nonzero values; otherwise the compressed weight."""
        with torch.no_grad():
            weight = self.compressed_weight(noise=False)
            if self.bits is None or not self.pruning_offset or self.mask is None:
                return weight
            return quantize(weight, 8, weight.abs().max())

    def deployed_offset(self) -> float:
        """beta written into a spec: the pruning boundary Q-hat quantizes beyond, 0 without Q-hat."""
        if self.bits is None or not self.pruning_offset:
            return 0.0
        return float(self.pruning_boundary())

    def weight_inputs(self) -> WeightInputs | None:
        """This layer's part of ``relaxed_weight.relaxed_weights``; a choice not relaxed is the selected option.
        None for a float layer (no bit option)."""
        one = torch.ones(1, 1, dtype=self.theta.dtype, device=self.theta.device)
        if "nonzero" in self.relaxed:
            masks, z_nonzero = self.option_masks.reshape(len(self.nonzero_options), -1), self.relaxed["nonzero"]
        else:
            masks = torch.ones_like(self.theta) if self.mask is None else self.mask
            masks, z_nonzero = masks.reshape(1, -1), one
        if "bits" in self.relaxed:
            return WeightInputs(self.theta, [self.ranges[str(b)] for b in self.bit_options], self.levels, self.one_bit,
                                self.relaxed["bits"], masks, z_nonzero)
        if self.bits is None:
            return None
        index = self.bit_options.index(self.bits)
        return WeightInputs(self.theta, [self.ranges[str(self.bits)]], self.levels[index:index + 1],
                            (0,) if self.bits == 1 else (), one, masks, z_nonzero)

    def relaxed_weights(self) -> torch.Tensor:
        """[S or 1, *theta.shape]: sum_k z_b[k] Q(theta, b_k, r_k) * sum_k z_s[k] m_k for each sample."""
        inputs = self.weight_inputs()
        if inputs is not None:
            return relaxed_weights([inputs])[0]
        if "nonzero" in self.relaxed:  # float: theta under the masks
            masks = self.option_masks.reshape(len(self.nonzero_options), -1)
            return self.theta.unsqueeze(0) * (self.relaxed["nonzero"] @ masks).view(-1, *self.theta.shape)
        return (self.theta if self.mask is None else self.theta * self.mask).unsqueeze(0)

    def deployed_range(self) -> float:
        """The range written into a spec: r_b, or max|theta| for a float layer."""
        if self.bits is None:
            return float(self.theta.detach().abs().max())
        return float(self.ranges[str(self.bits)].detach().clamp_min(MIN_RANGE))

    def kept_out_channels(self) -> int:
        return kept_count(self.out_channels, self.width)

    def relaxed_samples(self) -> int:
        """S of the relaxed choices; 1 when none is relaxed."""
        return next(iter(self.relaxed.values())).shape[0] if self.relaxed else 1

    def output_scale(self) -> torch.Tensor | None:
        """[S or 1, C]: the per-channel scale of the width on the output, sum_k z_w[k] mask_k relaxed, the
        selected width's mask below 1, None at full width."""
        if "width" in self.relaxed:
            if self.width_option_masks is None:
                self.width_option_masks = torch.stack([width_mask(self.out_channels, w)
                                                       for w in self.width_options]).to(self.theta)
            return self.relaxed["width"] @ self.width_option_masks
        if self.width < 1.0:
            return width_mask(self.out_channels, self.width).to(self.theta).unsqueeze(0)
        return None

    def sample_parameters(self, samples: int, input_scale: torch.Tensor | None = None,
                          output_factor: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                          weights: torch.Tensor | None = None) -> list[SampleParameters]:
        """Per sample: ``relaxed_weights()`` with ``input_scale`` [S or 1, C_in] (the width scale of the source,
        taken off the source's output) multiplied into the input channels and ``output_factor`` [S or 1, C or 1]
        into the output channels and the bias; ``scale`` [S or 1, C] stays on the output. Exact: a
        convolution is linear in each channel of its input and, without activation, in its output.
        ``weights``: ``relaxed_weights()`` if computed already (with other layers')."""
        weights = self.relaxed_weights() if weights is None else weights
        bias = self.bias.unsqueeze(0)
        ones = [1] * (self.theta.dim() - 1)
        if input_scale is not None:  # a depthwise layer's input channels are its output channels
            view = (-1, *ones) if self.op == "dwconv" else (1, -1, *ones[1:])
            weights = weights * input_scale.view(input_scale.shape[0], *view)
        if output_factor is not None:
            weights = weights * output_factor.view(output_factor.shape[0], -1, *ones)
            bias = bias * output_factor
        return per_sample(samples, weights, bias, scale)

    def forward(self, x: torch.Tensor, parameters: SampleParameters | None = None) -> torch.Tensor:
        """The layer's output. Relaxed with S samples, x holds S equal groups of images and group i uses
        sample i's choices; ``parameters`` says x is one group and gives its sample's (``GraphNet`` runs
        the groups one after the other with ``relaxed_plan``'s parameters)."""
        if parameters is not None:
            return self._relaxed_forward(x, parameters)
        if self.relaxed:
            samples = self.relaxed_samples()
            given = self.sample_parameters(samples, scale=self.output_scale())
            if samples == 1:
                return self._relaxed_forward(x, given[0])
            return torch.cat([self._relaxed_forward(group, p) for group, p in zip(sample_groups(x, samples), given)])
        out = self._apply_weight(x, self.compressed_weight())
        if self.batchnorm is not None:
            out = self.batchnorm(out)
        out = ACTIVATIONS[self.activation](out)
        if self.width < 1.0:
            out = out * self._channel_view(width_mask(self.out_channels, self.width).to(out))
        return out

    def _relaxed_forward(self, x: torch.Tensor, parameters: SampleParameters) -> torch.Tensor:
        if self.batchnorm is not None:
            raise ValueError("fold BatchNorm before relaxed forwards: batch statistics would mix the samples")
        out = ACTIVATIONS[self.activation](self._apply_weight(x, parameters.weight, parameters.bias))
        return out if parameters.scale is None else out * self._channel_view(parameters.scale)

    def fold_batchnorm(self) -> None:
        """Fold BN (with its running statistics) into theta and bias; outputs in eval mode are unchanged."""
        bn = self.batchnorm
        if bn is None:
            return
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.theta.mul_(scale.view(-1, *([1] * (self.theta.dim() - 1))))
            self.bias.copy_((self.bias - bn.running_mean) * scale + bn.bias)
        self.batchnorm = None


class SearchableConv2d(SearchableLayer):
    op = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, **options):
        self.kernel, self.stride = kernel, stride
        super().__init__(in_channels, out_channels, (out_channels, in_channels, kernel, kernel), **options)

    def _apply_weight(self, x, weight, bias=None):
        return _conv_same(x, weight, self.bias if bias is None else bias, self.stride, groups=1)


class SearchableDepthwiseConv2d(SearchableLayer):
    """Depth multiplier 1, so output channels follow input channels; its width must equal its input's."""

    op = "dwconv"

    def __init__(self, channels: int, kernel: int, stride: int = 1, **options):
        self.kernel, self.stride = kernel, stride
        super().__init__(channels, channels, (channels, 1, kernel, kernel), **options)

    def _apply_weight(self, x, weight, bias=None):
        return _conv_same(x, weight, self.bias if bias is None else bias, self.stride, groups=self.out_channels)


class SearchableDense(SearchableLayer):
    op = "dense"

    def __init__(self, in_features: int, out_features: int, **options):
        super().__init__(in_features, out_features, (out_features, in_features), **options)

    def _init_theta(self):
        nn.init.normal_(self.theta, 0.0, 0.01)

    def _make_batchnorm(self, channels):
        return nn.BatchNorm1d(channels)

    def _channel_view(self, vector):
        return vector.view(1, -1)

    def _apply_weight(self, x, weight, bias=None):
        return F.linear(x, weight, self.bias if bias is None else bias)


def _conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    # torch pads symmetrically; TF SAME puts the odd pixel after, which the Keras export uses.
    kernel = weight.shape[-1]
    top, bottom = same_padding(x.shape[2], kernel, stride)
    left, right = same_padding(x.shape[3], kernel, stride)
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride=stride, padding=(top, left), groups=groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride=stride, groups=groups)
