"""The UDC search space (paper 001 section 3, DESIGN.md section 3): quantizer, masks, searchable
layers sharing one weight tensor theta across all of their options, supernets, and the bridge to
and from the candidate contract (``harness.candidate``).

Every network here takes images NHWC (as ``harness.data`` yields them) and works NCHW inside.
A network is a ``GraphNet``: named layers in execution order, each reading earlier outputs by name,
which is exactly the graph a candidate spec describes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.candidate import FORMAT, Candidate, layer_shapes, validate
from harness.errors import UsageError

FLOAT_BITS = 32  # how a layer without quantization is recorded in a spec
ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "relu6": F.relu6}
MIN_RANGE = 1e-8


# ---------------------------------------------------------------- quantizer and masks


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
    """Q-hat (paper 001 Sec. 5): Q(theta - sign(theta)*beta, b, r) + sign(theta)*beta, so the b-bit grid
    covers only magnitudes beyond the pruning boundary beta; plain Q when ``offset`` is None."""
    if offset is None:
        return quantize(theta, bits, value_range)
    direction = torch.sign(theta).detach()
    return quantize(theta - direction * offset, bits, value_range) + direction * offset


def _best_range(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The clip level minimising ||Q(values, b, r) - values||^2 over a grid of 40 fractions of max|values|."""
    with torch.no_grad():
        trials = values.abs().max() * torch.linspace(0.05, 1.0, 40)
        errors = torch.stack([(quantize(values, bits, r) - values).square().sum() for r in trials])
        return trials[torch.argmin(errors)]


def kept_count(total: int, fraction: float) -> int:
    """How many of ``total`` elements a fraction keeps: round(fraction * total), at least 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a kept fraction must be in (0, 1], got {fraction}")
    return min(total, max(1, round(fraction * total)))


def magnitude_mask(theta: torch.Tensor, nonzero: float) -> torch.Tensor:
    """Boolean mask keeping exactly the kept_count(N, s) largest-|theta| elements (ties broken arbitrarily)."""
    keep = kept_count(theta.numel(), nonzero)
    flat = torch.zeros(theta.numel(), dtype=torch.bool, device=theta.device)
    flat[torch.topk(theta.detach().abs().flatten(), keep, sorted=False).indices] = True
    return flat.view_as(theta)


def width_mask(channels: int, width: float) -> torch.Tensor:
    """Boolean mask keeping the first rho fraction of ``channels`` (the paper's convention, after FBNetV2)."""
    mask = torch.zeros(channels, dtype=torch.bool)
    mask[: kept_count(channels, width)] = True
    return mask


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis; the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# ---------------------------------------------------------------- searchable layers


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
        self.bits: int | None = None
        self.nonzero = 1.0
        self.width = 1.0
        self.relaxed: dict[str, torch.Tensor] = {}
        self.quantize_probability = 1.0  # alpha of the finetuning quantization noise; 1 = always quantize
        self.pruning_offset = False  # quantize with Q-hat, offset by the largest pruned |theta|

    def _init_theta(self) -> None:
        nn.init.kaiming_normal_(self.theta, mode="fan_out", nonlinearity="relu")

    def _make_batchnorm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
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

    def refresh_mask(self, nonzero: float | None = None) -> None:
        """Recompute the magnitude mask from |theta|; ``nonzero`` overrides the selected fraction (pruning anneal)."""
        fraction = self.nonzero if nonzero is None else nonzero
        # Stored in theta's dtype so the forward multiplies without a conversion per step.
        self.mask = None if fraction >= 1.0 else magnitude_mask(self.theta, fraction).to(self.theta.dtype)

    def refresh_option_masks(self) -> None:
        """Recompute one magnitude mask per nonzero option from |theta|, for relaxed forwards."""
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
            self.ranges[str(bits)].data.copy_(_best_range(self.theta.detach(), bits))

    def init_range(self, nonzero: float | None = None) -> None:
        """Set the selected bitwidth's range to the clip level minimising ||(Q(theta) - theta) * m||^2 (grid
        search); ``nonzero`` overrides the selected fraction the mask m keeps."""
        if self.bits is None:
            return
        nonzero = self.nonzero if nonzero is None else nonzero
        with torch.no_grad():
            if nonzero >= 1.0:
                kept = self.theta
            else:
                mask = magnitude_mask(self.theta, nonzero)
                kept = self.theta[mask]
                if self.pruning_offset:  # Q-hat quantizes the magnitude beyond the pruning boundary
                    kept = kept.abs() - self.theta[~mask].abs().max()
            self.ranges[str(self.bits)].copy_(_best_range(kept, self.bits))

    # -- forward and deployment

    def pruning_boundary(self) -> torch.Tensor:
        """beta: the largest pruned |theta| (0 without a mask)."""
        if self.mask is None:
            return torch.zeros((), dtype=self.theta.dtype)
        return (self.theta.detach().abs() * (1 - self.mask)).max()

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

    def _relaxed_weights(self) -> torch.Tensor:
        """[S or 1, *theta.shape]: sum_k z_b[k] Q(theta, b_k, r_k) * sum_k z_s[k] m_k for each sample."""
        if "bits" in self.relaxed:
            z_bits = self.relaxed["bits"]
            used = (z_bits != 0).any(dim=0).tolist()  # top-kappa leaves most options at exactly 0
            shape = (-1, *([1] * self.theta.dim()))
            weight = sum(z_bits[:, k].view(shape) * quantize(self.theta, b, self.ranges[str(b)])
                         for k, (b, use) in enumerate(zip(self.bit_options, used)) if use)
        elif self.bits is None:
            weight = self.theta.unsqueeze(0)
        else:
            weight = quantize(self.theta, self.bits, self.ranges[str(self.bits)]).unsqueeze(0)
        if "nonzero" in self.relaxed:
            return weight * torch.tensordot(self.relaxed["nonzero"], self.option_masks, dims=1)
        return weight if self.mask is None else weight * self.mask

    def _apply_weights(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Apply S weight tensors, each to its own 1/S of the batch, in one call."""
        raise NotImplementedError

    def deployed_range(self) -> float:
        """The range written into a spec: r_b, or max|theta| for a float layer."""
        if self.bits is None:
            return float(self.theta.detach().abs().max())
        return float(self.ranges[str(self.bits)].detach().clamp_min(MIN_RANGE))

    def kept_out_channels(self) -> int:
        return kept_count(self.out_channels, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relaxed:
            return self._relaxed_forward(x)
        out = self._apply_weight(x, self.compressed_weight())
        if self.batchnorm is not None:
            out = self.batchnorm(out)
        out = ACTIVATIONS[self.activation](out)
        if self.width < 1.0:
            out = out * self._channel_view(width_mask(self.out_channels, self.width).to(out.dtype))
        return out

    def _relaxed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batchnorm is not None:
            raise ValueError("fold BatchNorm before relaxed forwards: batch statistics would mix the samples")
        weights = self._relaxed_weights()
        samples = next(iter(self.relaxed.values())).shape[0]
        if x.shape[0] % samples:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {samples} equal sample groups")
        if weights.shape[0] == 1 and samples > 1:
            weights = weights.expand(samples, *weights.shape[1:])
        out = ACTIVATIONS[self.activation](self._apply_weights(x, weights))
        if "width" in self.relaxed:
            if self.width_option_masks is None:
                self.width_option_masks = torch.stack([width_mask(self.out_channels, w) for w in self.width_options])
            scale = self.relaxed["width"] @ self.width_option_masks.to(out.dtype)  # [S, C]: sum_k z_w[k] w_k
            grouped = out.view(samples, -1, *out.shape[1:])
            out = (grouped * scale.view(samples, 1, -1, *([1] * (out.dim() - 2)))).view_as(out)
        elif self.width < 1.0:
            out = out * self._channel_view(width_mask(self.out_channels, self.width).to(out.dtype))
        return out

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

    def _apply_weight(self, x, weight):
        return _conv_same(x, weight, self.bias, self.stride, groups=1)

    def _apply_weights(self, x, weights):
        return _grouped_conv_same(x, weights, self.bias, self.stride, groups=1)


class SearchableDepthwiseConv2d(SearchableLayer):
    """Depth multiplier 1, so output channels follow input channels; its width must equal its input's."""

    op = "dwconv"

    def __init__(self, channels: int, kernel: int, stride: int = 1, **options):
        self.kernel, self.stride = kernel, stride
        super().__init__(channels, channels, (channels, 1, kernel, kernel), **options)

    def _apply_weight(self, x, weight):
        return _conv_same(x, weight, self.bias, self.stride, groups=self.out_channels)

    def _apply_weights(self, x, weights):
        return _grouped_conv_same(x, weights, self.bias, self.stride, groups=self.out_channels)


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

    def _apply_weight(self, x, weight):
        return F.linear(x, weight, self.bias)

    def _apply_weights(self, x, weights):
        grouped = x.view(weights.shape[0], -1, x.shape[-1])
        return (torch.bmm(grouped, weights.transpose(1, 2)) + self.bias).view(x.shape[0], -1)


def _conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    # torch pads symmetrically; TF SAME puts the odd pixel after, which the Keras export uses.
    kernel = weight.shape[-1]
    top, bottom = same_padding(x.shape[2], kernel, stride)
    left, right = same_padding(x.shape[3], kernel, stride)
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride=stride, padding=(top, left), groups=groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride=stride, groups=groups)


def _grouped_conv_same(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor, stride: int,
                       groups: int) -> torch.Tensor:
    """S convolutions in one: batch group i of x (S equal groups) is convolved with weights[i]. The
    groups are moved into channels so one grouped convolution does all of them."""
    samples = weights.shape[0]
    if samples == 1:
        return _conv_same(x, weights[0], bias, stride, groups)
    per_group, channels, height, width = x.shape[0] // samples, *x.shape[1:]
    stacked = x.view(samples, per_group, channels, height, width).transpose(0, 1).reshape(
        per_group, samples * channels, height, width)
    out = _conv_same(stacked, weights.reshape(-1, *weights.shape[2:]), bias.repeat(samples), stride,
                     groups * samples)
    return out.view(per_group, samples, -1, *out.shape[2:]).transpose(0, 1).reshape(x.shape[0], -1, *out.shape[2:])


class Add(nn.Module):
    """a + b, where b is a residual branch. ``gate`` ([S], relaxed) scales the branch per sample group:
    z[block] * (a + f(a)) + z[identity] * a = a + z[block] * f(a) for a linear add."""

    op = "add"

    def __init__(self, activation: str = "none"):
        super().__init__()
        self.activation = activation
        self.gate: torch.Tensor | None = None
        self.shortcut_scale: torch.Tensor | None = None  # [S]: a search's dropout of the shortcut

    def forward(self, a, b):
        if self.shortcut_scale is not None:
            samples = self.shortcut_scale.shape[0]
            a = (a.view(samples, -1, *a.shape[1:]) * self.shortcut_scale.view(samples, *([1] * a.dim()))).view_as(a)
        if self.gate is not None:
            samples = self.gate.shape[0]
            b = (b.view(samples, -1, *b.shape[1:]) * self.gate.view(samples, *([1] * b.dim()))).view_as(b)
        return ACTIVATIONS[self.activation](a + b)


class GlobalAveragePool(nn.Module):
    op = "gap"

    def forward(self, x):
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------- networks


class GraphNet(nn.Module):
    """Named layers in execution order; ``sources[name]`` lists the outputs a layer reads ("input" = the image)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, architecture: str = "graph"):
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self.architecture = architecture
        self.layers = nn.ModuleDict()
        self.sources: dict[str, tuple[str, ...]] = {}
        # Residual blocks that may be replaced by the identity (depth search): add name -> branch layers.
        self.blocks: dict[str, tuple[str, ...]] = {}
        self.skipped: set[str] = set()

    def append(self, name: str, layer: nn.Module, *sources: str) -> str:
        known = {"input", *self.layers}
        if name in known:
            raise ValueError(f"layer name {name!r} is already used")
        if not sources or any(s not in known for s in sources):
            raise ValueError(f"layer {name!r} reads {sources}, which are not earlier layers")
        self.layers[name] = layer
        self.sources[name] = sources
        return name

    def forward(self, images_nhwc: torch.Tensor) -> torch.Tensor:
        outputs = {"input": images_nhwc.permute(0, 3, 1, 2)}
        inactive = self.inactive_layers()
        for name, layer in self.layers.items():
            if name in self.skipped:
                outputs[name] = outputs[self.sources[name][0]]
            elif name not in inactive:
                outputs[name] = layer(*(outputs[s] for s in self.sources[name]))
        return outputs[name]

    def skip_block(self, add_name: str, skip: bool = True) -> None:
        """Replace a residual block by the identity (or restore it): its add passes the shortcut through."""
        if add_name not in self.blocks:
            raise ValueError(f"{add_name!r} is not a skippable block; blocks: {', '.join(self.blocks) or 'none'}")
        if skip:
            self.skipped.add(add_name)
        else:
            self.skipped.discard(add_name)

    def inactive_layers(self) -> set[str]:
        return {name for block in self.skipped for name in self.blocks[block]}

    def block_of(self) -> dict[str, str]:
        """layer name -> the skippable block whose branch holds it."""
        return {name: block for block, names in self.blocks.items() for name in names}

    def width_keys(self) -> dict[str, str | None]:
        """Every node's width decision: layers whose kept widths must agree share a key. A depthwise layer,
        an add, a pool take their input's; the inputs of an add are merged (residual chains slice as one);
        None where the width is always 1 (the image, a layer with no width option below 1)."""
        parent: dict[str, str] = {}

        def root(key):
            while parent.get(key, key) != key:
                key = parent[key]
            return key

        keys: dict[str, str | None] = {"input": None}
        for name, layer in self.layers.items():
            sources = self.sources[name]
            if isinstance(layer, SearchableLayer) and layer.op != "dwconv":
                keys[name] = name if any(w < 1.0 for w in layer.width_options) else None
            elif isinstance(layer, Add):
                first, second = (keys[s] for s in sources)
                if (first is None) != (second is None):
                    raise ValueError(f"{name}: adds a fixed-width input to a searchable-width one")
                if first is not None and root(first) != root(second):
                    parent[root(second)] = root(first)
                keys[name] = first
            else:
                keys[name] = keys[sources[0]]
        return {name: None if key is None else root(key) for name, key in keys.items()}

    def relax(self, choices: dict[str, dict[str, torch.Tensor]] | None = None,
              gates: dict[str, torch.Tensor] | None = None) -> None:
        """Relaxed choices per layer name ({"bits"|"nonzero"|"width": [S, K]}) and block gates ([S], the
        weight of the block against the identity); layers and blocks not named keep their selection.
        ``relax()`` returns every layer and block to its selection."""
        choices, gates = choices or {}, gates or {}
        for name, layer in self.layers.items():
            if isinstance(layer, SearchableLayer):
                layer.relax(**choices.get(name, {}))
            elif isinstance(layer, Add):
                layer.gate, layer.shortcut_scale = gates.get(name), None

    def output_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of every convolution's output; (1, 1) for vectors."""
        sizes = {"input": tuple(self.input_shape[:2])}
        for name, layer in self.layers.items():
            before = sizes[self.sources[name][0]]
            if isinstance(layer, (SearchableConv2d, SearchableDepthwiseConv2d)):
                sizes[name] = tuple(math.ceil(d / layer.stride) for d in before)
            elif isinstance(layer, Add):
                sizes[name] = before
            else:
                sizes[name] = (1, 1)
        return sizes

    def searchable_layers(self) -> list[SearchableLayer]:
        return [layer for layer in self.layers.values() if isinstance(layer, SearchableLayer)]

    def select(self, bits: int | None = None, nonzero: float = 1.0, width: float = 1.0) -> None:
        """The same choice for every searchable layer (uniform compression)."""
        for layer in self.searchable_layers():
            layer.select(bits=bits, nonzero=nonzero, width=width)

    def refresh_masks(self, nonzero: float | None = None) -> None:
        for layer in self.searchable_layers():
            layer.refresh_mask(nonzero)

    def init_ranges(self) -> None:
        for layer in self.searchable_layers():
            layer.init_range()

    def fold_batchnorm(self) -> None:
        for layer in self.searchable_layers():
            layer.fold_batchnorm()


class _Builder:
    """Appends layers to a GraphNet while tracking channel counts, so supernets read like their diagrams."""

    def __init__(self, net: GraphNet, **layer_options):
        self.net, self.options = net, layer_options
        self.channels = {"input": net.input_shape[2]}
        self.last = "input"

    def _add(self, name, layer, channels, *sources):
        self.last = self.net.append(name, layer, *sources)
        self.channels[name] = channels
        return name

    def conv(self, name, out_channels, kernel, stride=1, activation="relu6", source=None):
        source = source or self.last
        layer = SearchableConv2d(self.channels[source], out_channels, kernel, stride, activation=activation,
                                 **self.options)
        return self._add(name, layer, out_channels, source)

    def dwconv(self, name, kernel, stride=1, activation="relu6"):
        channels = self.channels[self.last]
        layer = SearchableDepthwiseConv2d(channels, kernel, stride, activation=activation, **self.options)
        return self._add(name, layer, channels, self.last)

    def add(self, name, a, b, activation="none"):
        return self._add(name, Add(activation), self.channels[a], a, b)

    def gap(self, name):
        return self._add(name, GlobalAveragePool(), self.channels[self.last], self.last)

    def dense(self, name, out_features):
        options = {**self.options, "width_options": (1.0,)}  # class logits are never dropped
        layer = SearchableDense(self.channels[self.last], out_features, **options)
        return self._add(name, layer, out_features, self.last)


# (expansion t, output channels c, stride s) per inverted-residual block, after a stride-2 stem of 16.
MBV2_BLOCKS = ((4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 2), (4, 64, 1))
MBV2_STEM, MBV2_HEAD = 16, 192
# (output channels, stride) per basic block, after a stride-2 stem of 16; the stride-1 blocks with an
# identity shortcut can be skipped (the identity option that varies depth).
RESNET_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))
RESNET_STEM = 16


def mbv2_supernet(input_shape=(28, 28, 1), num_classes: int = 10, batchnorm: bool = True,
                  **layer_options) -> GraphNet:
    """MobileNetV2-style: stem conv3x3/2 -> inverted residuals (expand 1x1 relu6, dw 3x3 relu6,
    project 1x1 linear, residual add when stride 1 and channels match) -> 1x1 relu6 -> gap -> dense."""
    net = GraphNet(input_shape, num_classes, "mbv2")
    build = _Builder(net, batchnorm=batchnorm, **layer_options)
    build.conv("stem", MBV2_STEM, 3, stride=2)
    for index, (expansion, channels, stride) in enumerate(MBV2_BLOCKS, start=1):
        block_input = build.last
        build.conv(f"b{index}_expand", build.channels[block_input] * expansion, 1)
        build.dwconv(f"b{index}_dw", 3, stride)
        build.conv(f"b{index}_project", channels, 1, activation="none")
        if stride == 1 and build.channels[block_input] == channels:
            add = build.add(f"b{index}_add", block_input, build.last)
            net.blocks[add] = (f"b{index}_expand", f"b{index}_dw", f"b{index}_project")
    build.conv("head", MBV2_HEAD, 1)
    build.gap("pool")
    build.dense("fc", num_classes)
    return net


def resnet_supernet(input_shape=(28, 28, 1), num_classes: int = 10, batchnorm: bool = True,
                    **layer_options) -> GraphNet:
    """ResNet-style: stem conv3x3/2 -> basic blocks (3x3 relu, 3x3 linear, add + relu; a 1x1
    projection shortcut where stride or channels change) -> gap -> dense."""
    net = GraphNet(input_shape, num_classes, "resnet")
    build = _Builder(net, batchnorm=batchnorm, **layer_options)
    build.conv("stem", RESNET_STEM, 3, stride=2, activation="relu")
    for index, (channels, stride) in enumerate(RESNET_BLOCKS, start=1):
        block_input = build.last
        shortcut = block_input
        if stride != 1 or build.channels[block_input] != channels:
            shortcut = build.conv(f"b{index}_shortcut", channels, 1, stride, activation="none", source=block_input)
        build.conv(f"b{index}_conv1", channels, 3, stride, activation="relu", source=block_input)
        build.conv(f"b{index}_conv2", channels, 3, activation="none")
        add = build.add(f"b{index}_add", shortcut, build.last, activation="relu")
        if shortcut == block_input:
            net.blocks[add] = (f"b{index}_conv1", f"b{index}_conv2")
    build.gap("pool")
    build.dense("fc", num_classes)
    return net


SUPERNETS = {"mbv2": mbv2_supernet, "resnet": resnet_supernet}


def make_supernet(name: str, input_shape, num_classes: int, **options) -> GraphNet:
    if name not in SUPERNETS:
        raise UsageError(f"unknown supernet {name!r}; choose one of {', '.join(SUPERNETS)}")
    return SUPERNETS[name](input_shape, num_classes, **options)


# ---------------------------------------------------------------- candidate bridge

# torch layout -> Keras layout, and back
_TO_KERAS = {"conv": (2, 3, 1, 0), "dwconv": (2, 3, 0, 1), "dense": (1, 0)}
_FROM_KERAS = {"conv": (3, 2, 0, 1), "dwconv": (2, 3, 0, 1), "dense": (1, 0)}


def to_candidate(model: GraphNet, name: str, meta: dict | None = None) -> Candidate:
    """The model at its selected options as a candidate: weights at their deployed values Q(theta)*m,
    channels removed by the width choice sliced away physically (downstream inputs too).

    BatchNorm must already be folded. Raises ValueError where slicing cannot be exact: a residual
    add of different kept widths, a depthwise layer whose width differs from its input's, or an
    output layer that drops classes.
    """
    if any(layer.batchnorm is not None for layer in model.searchable_layers()):
        raise ValueError("fold BatchNorm (model.fold_batchnorm()) before making a candidate")
    kept = {"input": model.input_shape[2]}
    layers, weights = [], {}
    alias = {"input": "input"}  # a skipped block's add stands for its shortcut
    inactive = model.inactive_layers()
    for layer_name, layer in model.layers.items():
        if layer_name in inactive:
            continue
        if layer_name in model.skipped:
            alias[layer_name] = alias[model.sources[layer_name][0]]
            continue
        sources = tuple(alias[s] for s in model.sources[layer_name])
        alias[layer_name] = layer_name
        if isinstance(layer, Add):
            widths = {kept[s] for s in sources}
            if len(widths) != 1:
                raise ValueError(f"{layer_name}: adds inputs with different kept widths {sorted(widths)}; "
                                 "choose one width for every layer of a residual chain")
            kept[layer_name] = kept[sources[0]]
            layers.append({"name": layer_name, "op": "add", "inputs": list(sources), "activation": layer.activation})
            continue
        source = sources[0]
        if isinstance(layer, GlobalAveragePool):
            kept[layer_name] = kept[source]
            layers.append({"name": layer_name, "op": "gap", "input": source})
            continue
        kept_in, kept_out = kept[source], layer.kept_out_channels()
        if layer.op == "dwconv" and kept_out != kept_in:
            raise ValueError(f"{layer_name}: depthwise layer keeps {kept_out} channels but its input keeps {kept_in}; "
                             "give it the same width as the layer before it")
        weight = _deployed_weight(layer)
        sliced = weight[:kept_out] if layer.op == "dwconv" else weight[:kept_out, :kept_in]
        if np.count_nonzero(sliced) == 0:
            raise ValueError(f"{layer_name}: every deployed weight is zero (range {layer.deployed_range():.3g} "
                             f"too wide for {layer.bits} bits); re-initialise ranges or finetune longer")
        kept[layer_name] = kept_out
        entry = {"name": layer_name, "op": layer.op, "input": source}
        if layer.op != "dense":
            entry.update(kernel=layer.kernel, stride=layer.stride)
        if layer.op != "dwconv":
            entry["out_channels"] = kept_out
        entry.update(activation=layer.activation, bits=layer.bits or FLOAT_BITS,
                     nonzero=np.count_nonzero(sliced) / sliced.size, width=layer.width,
                     range=layer.deployed_range(), offset=layer.deployed_offset())
        layers.append(entry)
        weights[f"{layer_name}.weight"] = np.ascontiguousarray(sliced.transpose(_TO_KERAS[layer.op]))
        weights[f"{layer_name}.bias"] = layer.bias.detach().numpy()[:kept_out].astype(np.float32)
    if kept[alias[layer_name]] != model.num_classes:
        raise ValueError(f"the output layer keeps {kept[layer_name]} of {model.num_classes} classes; give it width 1.0")
    spec = {"format": FORMAT, "name": name, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
            "layers": layers, "meta": dict(meta or {})}
    candidate = Candidate(spec, weights)
    validate(candidate, where=f"candidate {name}")
    return candidate


def _deployed_weight(layer: SearchableLayer) -> np.ndarray:
    if layer.nonzero < 1.0 and layer.mask is None:
        raise ValueError(f"a layer selects nonzero={layer.nonzero} but has no mask; call refresh_masks() first")
    return layer.deployed_weight().numpy().astype(np.float32)


def build_torch(candidate: Candidate) -> GraphNet:
    """A float torch network (NHWC input) computing exactly what the candidate spec describes with its
    weights as stored: no quantization or masking is applied again."""
    spec = candidate.spec
    validate(candidate, where=f"candidate {candidate.name}")
    shapes = layer_shapes(spec)
    net = GraphNet(spec["input_shape"], spec["num_classes"], spec.get("meta", {}).get("supernet", "candidate"))
    previous = "input"
    for entry in spec["layers"]:
        layer_name, op = entry["name"], entry["op"]
        activation = entry.get("activation", "none")
        if op == "add":
            net.append(layer_name, Add(activation), *entry["inputs"])
        else:
            source = entry.get("input", previous)
            in_channels = shapes[source][-1]
            if op == "gap":
                layer = GlobalAveragePool()
            elif op == "conv":
                layer = SearchableConv2d(in_channels, entry["out_channels"], entry["kernel"], entry["stride"],
                                         activation=activation)
            elif op == "dwconv":
                layer = SearchableDepthwiseConv2d(in_channels, entry["kernel"], entry["stride"], activation=activation)
            else:
                layer = SearchableDense(in_channels, entry["out_channels"], activation=activation)
            if op != "gap":
                with torch.no_grad():
                    keras_weight = torch.from_numpy(np.asarray(candidate.weights[f"{layer_name}.weight"], np.float32))
                    layer.theta.copy_(keras_weight.permute(_FROM_KERAS[op]))
                    layer.bias.copy_(torch.from_numpy(np.asarray(candidate.weights[f"{layer_name}.bias"], np.float32)))
            net.append(layer_name, layer, source)
        previous = layer_name
    return net.eval()
