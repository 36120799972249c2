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


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward; a custom function keeps the forward value exactly round(x)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


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
    value_range = value_range.clamp_min(MIN_RANGE)
    if bits == 1:
        return value_range * _SignSTE.apply(theta / value_range.detach())
    step = value_range / (2 ** (bits - 1) - 1)
    clipped = torch.minimum(torch.maximum(theta, -value_range), value_range)
    return step * _RoundSTE.apply(clipped / step)


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
        self.bits: int | None = None
        self.nonzero = 1.0
        self.width = 1.0

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

    def init_range(self) -> None:
        """Set the selected bitwidth's range to the clip level minimising ||(Q(theta) - theta) * m||^2 (grid search)."""
        if self.bits is None:
            return
        with torch.no_grad():
            kept = self.theta if self.nonzero >= 1.0 else self.theta[magnitude_mask(self.theta, self.nonzero)]
            largest = kept.abs().max()
            trials = largest * torch.linspace(0.05, 1.0, 40)
            errors = torch.stack([(quantize(kept, self.bits, r) - kept).square().sum() for r in trials])
            self.ranges[str(self.bits)].copy_(trials[torch.argmin(errors)])

    # -- forward and deployment

    def compressed_weight(self) -> torch.Tensor:
        weight = self.theta
        if self.bits is not None:
            weight = quantize(weight, self.bits, self.ranges[str(self.bits)])
        if self.mask is not None:
            weight = weight * self.mask
        return weight

    def deployed_range(self) -> float:
        """The range written into a spec: r_b, or max|theta| for a float layer."""
        if self.bits is None:
            return float(self.theta.detach().abs().max())
        return float(self.ranges[str(self.bits)].detach().clamp_min(MIN_RANGE))

    def kept_out_channels(self) -> int:
        return kept_count(self.out_channels, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._apply_weight(x, self.compressed_weight())
        if self.batchnorm is not None:
            out = self.batchnorm(out)
        out = ACTIVATIONS[self.activation](out)
        if self.width < 1.0:
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


class SearchableDepthwiseConv2d(SearchableLayer):
    """Depth multiplier 1, so output channels follow input channels; its width must equal its input's."""

    op = "dwconv"

    def __init__(self, channels: int, kernel: int, stride: int = 1, **options):
        self.kernel, self.stride = kernel, stride
        super().__init__(channels, channels, (channels, 1, kernel, kernel), **options)

    def _apply_weight(self, x, weight):
        return _conv_same(x, weight, self.bias, self.stride, groups=self.out_channels)


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


def _conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    # torch pads symmetrically; TF SAME puts the odd pixel after, which the Keras export uses.
    kernel = weight.shape[-1]
    top, bottom = same_padding(x.shape[2], kernel, stride)
    left, right = same_padding(x.shape[3], kernel, stride)
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride=stride, padding=(top, left), groups=groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride=stride, groups=groups)


class Add(nn.Module):
    op = "add"

    def __init__(self, activation: str = "none"):
        super().__init__()
        self.activation = activation

    def forward(self, a, b):
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
        for name, layer in self.layers.items():
            outputs[name] = layer(*(outputs[s] for s in self.sources[name]))
        return outputs[name]

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
# (output channels, stride) per basic block, after a stride-2 stem of 16.
RESNET_BLOCKS = ((16, 1), (32, 2), (64, 2))
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
            build.add(f"b{index}_add", block_input, build.last)
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
        build.add(f"b{index}_add", shortcut, build.last, activation="relu")
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
    for layer_name, layer in model.layers.items():
        sources = model.sources[layer_name]
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
                     range=layer.deployed_range(), offset=0.0)
        layers.append(entry)
        weights[f"{layer_name}.weight"] = np.ascontiguousarray(sliced.transpose(_TO_KERAS[layer.op]))
        weights[f"{layer_name}.bias"] = layer.bias.detach().numpy()[:kept_out].astype(np.float32)
    if kept[layer_name] != model.num_classes:
        raise ValueError(f"the output layer keeps {kept[layer_name]} of {model.num_classes} classes; give it width 1.0")
    spec = {"format": FORMAT, "name": name, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
            "layers": layers, "meta": dict(meta or {})}
    candidate = Candidate(spec, weights)
    validate(candidate, where=f"candidate {name}")
    return candidate


def _deployed_weight(layer: SearchableLayer) -> np.ndarray:
    if layer.nonzero < 1.0 and layer.mask is None:
        raise ValueError(f"a layer selects nonzero={layer.nonzero} but has no mask; call refresh_masks() first")
    with torch.no_grad():
        return layer.compressed_weight().numpy().astype(np.float32)


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
