"""The UDC search space (the UDC paper, section 3), one module a part:

- ``quantizers``: Q(theta, b, r) and Q-hat with their straight-through gradients;
- ``masks``: the magnitude (sparsity) and width masks;
- ``layers``: searchable layers sharing one theta across their options; ``fixed_layers``: the parameter-free ones;
- ``relaxed_weight``: the relaxed weights of many layers as one autograd node;
- ``graph``: ``GraphNet``, the named-layer graph a candidate spec describes; ``relaxed_plan``: how it runs
  relaxed samples, with width scales and gates moved onto weights;
- ``supernets``: the MobileNetV2-like and ResNet-like supernets;
- ``bridge``: to and from the candidate contract (``to_candidate``, ``build_torch``).
"""

from search.space.bridge import build_torch, to_candidate
from search.space.fixed_layers import Add, GlobalAveragePool
from search.space.graph import GraphNet
from search.space.layers import (SearchableConv2d, SearchableDense, SearchableDepthwiseConv2d, SearchableLayer,
                                 same_padding)
from search.space.masks import kept_count, magnitude_mask, width_mask
from search.space.quantizers import quantize, quantize_offset
from search.space.supernets import SUPERNETS, make_supernet

__all__ = ["SUPERNETS", "Add", "GlobalAveragePool", "GraphNet", "SearchableConv2d", "SearchableDense",
           "SearchableDepthwiseConv2d", "SearchableLayer", "build_torch", "kept_count", "magnitude_mask",
           "make_supernet", "quantize", "quantize_offset", "same_padding", "to_candidate", "width_mask"]
