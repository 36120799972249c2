"""The masks of a searchable layer: the magnitude mask of unstructured sparsity and the width mask on
output channels, and how many elements a kept fraction keeps."""

from __future__ import annotations

import torch


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
