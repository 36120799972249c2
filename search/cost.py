"""Cost models. Strategies call these; they never know how a cost is computed.

Size model (DESIGN.md section 3): a layer of N weight elements with nonzero fraction s and
b-bit values costs eps = N * (s*b + H2(s)) bits, the chain-rule bound
H(Q(theta)*m) <= H(m) + H(Q(theta)*m | m) <= H2(s) + s*b. The paper's printed eq. (4),
(b + H2(s)) * ||w||_0, is not used: with ||w||_0 = all active elements it would make sparsity
grow the size.
"""

from __future__ import annotations

import math


def binary_entropy(s: float) -> float:
    """H2(s) in bits; 0 at s in {0, 1}."""
    if s <= 0.0 or s >= 1.0:
        return 0.0
    return -s * math.log2(s) - (1.0 - s) * math.log2(1.0 - s)


def layer_size_bits(n_elements: int, nonzero: float, bits: int) -> float:
    """eps(s, b, rho) for a layer whose width choice leaves ``n_elements`` weights."""
    return n_elements * (nonzero * bits + binary_entropy(nonzero))
