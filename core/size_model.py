"""The size model and the entropy figures of deployed weights, without torch.

A layer of N weight elements with nonzero fraction s and b-bit values costs eps = N * (s*b + H2(s))
bits: the chain-rule bound H(Q(theta)*m) <= H(m) + H(Q(theta)*m | m) <= H2(s) + s*b (see
docs/papers.md for where this reading differs from the UDC paper's printed eq. 4). The search
constrains it (relaxed in ``search.cost``); the harness reports it beside what a deployed model's
int8 codes give: their empirical entropy and a real range coding of their nonzero masks.
"""

from __future__ import annotations

import math

import numpy as np

# Per coded tensor: element count and nonzero probability, so a decoder can rebuild the model.
CODED_HEADER_BYTES = 8


def binary_entropy(s: float) -> float:
    """H2(s) in bits; 0 at s in {0, 1}."""
    if s <= 0.0 or s >= 1.0:
        return 0.0
    return -s * math.log2(s) - (1.0 - s) * math.log2(1.0 - s)


def layer_size_bits(n_elements: int, nonzero: float, bits: int) -> float:
    """eps(s, b, rho) for a layer whose width choice leaves ``n_elements`` weights."""
    return n_elements * (nonzero * bits + binary_entropy(nonzero))


def effective_bits(codes: np.ndarray) -> int:
    """Bits a uniform code needs for this tensor's distinct nonzero values (BYO models have no spec)."""
    distinct = np.unique(codes[codes != 0]).size
    return max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1


def empirical_entropy_bits(codes: np.ndarray) -> float:
    _, counts = np.unique(codes, return_counts=True)
    p = counts / codes.size
    return float(-(counts * np.log2(p)).sum())


def range_coded_mask_bits(codes: np.ndarray) -> float:
    """Compress the nonzero mask with a range coder under a Bernoulli(nnz/N) model; return its bits."""
    import constriction

    mask = (codes.ravel() != 0).astype(np.int32)
    p = float(mask.mean())
    if p in (0.0, 1.0):
        return 8.0 * CODED_HEADER_BYTES  # the header alone says "all zero" / "all nonzero"
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(mask, constriction.stream.model.Bernoulli(p, perfect=False))
    return 32.0 * encoder.get_compressed().size + 8.0 * CODED_HEADER_BYTES
