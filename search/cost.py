"""Cost models. Strategies call these; they never know how a cost is computed.

The exact size model is ``core.size_model`` (torch-free, shared with the harness's measurements);
here are its relaxed forms for the search, MACs, bit operations and measured latency tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from core.candidate import Candidate


# ---------------------------------------------------------------- relaxed costs
# These take torch tensors through their methods only, so importing this module never needs torch.

ENTROPY_CLAMP = 1e-6  # keeps log2 finite; H2 is set to 0 exactly at s in {0, 1}


def relaxed_binary_entropy(nonzero):
    """H2(s) for a tensor s, differentiable inside (0, 1), exactly 0 at s in {0, 1} with zero gradient there."""
    clamped = nonzero.clamp(ENTROPY_CLAMP, 1.0 - ENTROPY_CLAMP)
    entropy = -(clamped * clamped.log2() + (1.0 - clamped) * (1.0 - clamped).log2())
    return entropy * ((nonzero > 0.0) & (nonzero < 1.0))


def relaxed_layer_size_bits(n_full: int, nonzero, bits, width_out, width_in=1.0):
    """eps = n_full * width_out * width_in * (s*b + H2(s)) bits for expected options (tensors of shape
    [S] or 0-d): the paper's relaxation, the size model evaluated at sum_k z[k] * option_k.

    ``n_full`` counts the weight elements at full width. A layer's width scales its output channels
    and the width of the layer feeding it scales its input channels; a depthwise layer has no width
    of its own, so pass its input's width as ``width_out`` and leave ``width_in`` at 1. Channel
    counts are not rounded here (kept_count rounds them in the deployed network).
    """
    return n_full * width_out * width_in * (nonzero * bits + relaxed_binary_entropy(nonzero))


def size_penalty(sizes_bits, target_bits: float):
    """L_E of eq. 7 as a mean over MC samples, relative to the budget: mean |E - e*| / e*. Being
    relative, one lambda serves every budget."""
    return (sizes_bits - target_bits).abs().mean() / target_bits


def layer_macs(op: str, kernel: int, in_channels: int, out_channels: int, out_height: int = 1,
               out_width: int = 1) -> int:
    """Multiply-accumulates of one layer at full width:
    conv k*k*cin*cout*H_out*W_out; dwconv k*k*c*H_out*W_out (c = out_channels = in_channels);
    dense cin*cout (kernel and output size ignored)."""
    if op == "conv":
        return kernel * kernel * in_channels * out_channels * out_height * out_width
    if op == "dwconv":
        return kernel * kernel * out_channels * out_height * out_width
    if op == "dense":
        return in_channels * out_channels
    raise ValueError(f"no MAC count for op {op!r}; expected conv, dwconv or dense")


def relaxed_macs(full_macs: int, width_out, width_in=1.0):
    """MACs at expected widths: full_macs * width_out * width_in, MACs being bilinear in the channel
    counts. As for the size, a depthwise layer takes its input's width as ``width_out`` and width_in 1."""
    return full_macs * width_out * width_in


# ---------------------------------------------------------------- bit operations (Zur et al., appendix F)


def layer_bops(kernel: int, input_activations: dict[int, int], output_weights: dict[int, int], height: int,
               width: int, depthwise: bool = False) -> float:
    """BOPs of a convolution with filter-wise bitwidths (eqs. 28-31).

    ``input_activations`` maps an activation bitwidth b^a to how many filters of the layer before
    output it (a_{n-1,t1}); ``output_weights`` maps a weight bitwidth b^w to how many of this
    layer's filters use it (a_{n,t2}). Per output pixel, a filter with b^w-bit weights reading c
    channels costs k^2 [c AW + sum_t1 a_{n-1,t1} b^a_t1 b^w]: the products, and c k^2 additions of
    accumulator width AW = log2 M, M = 2^{b^w} k^2 sum_t1 a_{n-1,t1} 2^{b^a_t1} (eq. 28; eq. 29's
    printed approximation multiplies where this adds logarithms). A depthwise filter reads one of
    the input channels, so its sums run over one channel's share.
    """
    channels = sum(input_activations.values())
    share = 1.0 / channels if depthwise else 1.0
    total = 0.0
    for weight_bits, filters in output_weights.items():
        max_sum = (2 ** weight_bits) * kernel * kernel * share * sum(a * 2 ** b for b, a in input_activations.items())
        products = share * sum(a * b * weight_bits for b, a in input_activations.items())
        total += filters * kernel * kernel * (share * channels * math.log2(max_sum) + products)
    return total * height * width


# ---------------------------------------------------------------- latency tables (UNAS)


# A cost provider (a profiler, in NNI's terms) measures what the search cannot count itself: given a
# candidate and calibration images, the cycles of each operator of its compiled model, as
# (operator name, cycles) with the name of the operator's output tensor. The caller hands it to the
# strategy that needs it (``search.strategy.STRATEGIES[...].providers``); search never compiles.
OperatorCycles = Callable[[Candidate, np.ndarray], list[tuple[str, float]]]


class LatencyTable:
    """Per-layer latency in cycles at each width option, measured (not counted): ``cycles[layer][w]`` is
    the layer's cost in a network where every layer has width w. A layer reading w_in channels and
    writing w_out costs cycles[layer][w_out] * w_in / w_out (both counts scale a convolution's work);
    a depthwise layer cycles[layer][w]. ``fixed`` holds what no layer owns (adds, pooling, softmax).
    """

    def __init__(self, cycles: dict[str, dict[float, float]], fixed: float = 0.0):
        self.cycles, self.fixed = cycles, fixed

    def layer(self, layer: str, width_out: float, width_in: float = 1.0, depthwise: bool = False) -> float:
        cycles = self.cycles[layer][width_out]
        return cycles if depthwise else cycles * width_in / width_out

    def relaxed_layer(self, layer: str, z_width_out, options, expected_out, expected_in=1.0, depthwise: bool = False):
        """The cost at a relaxed width: sum_k z[k] cycles(options[k]) (z [S, K] ordered like ``options``, the
        width decision's own options; None for width 1), times the expected input/output width ratio for a
        convolution. The table is looked up by width value, so its keys' order does not matter."""
        import torch

        if z_width_out is None:
            cycles = self.cycles[layer][1.0]
        else:
            missing = [w for w in options if w not in self.cycles[layer]]
            if missing:
                raise ValueError(f"latency table has no cycles at width {missing[0]:g} for layer {layer}; "
                                 f"measure it at every width option ({', '.join(f'{w:g}' for w in options)})")
            table = torch.tensor([self.cycles[layer][w] for w in options], dtype=z_width_out.dtype)
            cycles = z_width_out @ table
        return cycles if depthwise else cycles * expected_in / expected_out
