"""How theta trains in the searches and in finetuning: the optimiser, the learning-rate schedules and the
data augmentation, from the settings.

Two recipes, chosen per setting (``search.settings``):

- ours (``quick``/``full``): Adam with one rate per layer scaled to its weights (``scaled_lr_groups``: the
  rates are relative), one cosine over warm-up and search, finetuning stages 1-2 each decaying to
  ``final_lr_fraction`` (1e-2) of the rate, no augmentation, no weight decay;
- the UDC paper's (appendix E, the ``paper`` preset): SGD at absolute rates (``optimizer = "sgd"``), a cosine
  from the rate to ``final_lr_fraction`` (1e-3: 0.1 -> 1e-4) in warm-up and again in the search
  (``lr_schedule = "per-phase"``), finetuning stage 1 with warm restarts (cycles of ``restart_steps``
  doubling after each), l2 regularisation (``weight_decay``) and flips, crops and cutout (``augment``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from search.space import GraphNet
from search.strategy.uniform import scaled_lr_groups

# The paper names SGD without its momentum; 0.9, the common choice, is assumed.
MOMENTUM = 0.9
# Appendix E on CIFAR (32x32): random crops after padding by 4 and a cutout square of 18, scaled to the image.
CROP_PADDING, CUTOUT, CUTOUT_AT = 4, 18, 32


def theta_optimizer(model: GraphNet, lr: float, settings: dict) -> torch.optim.Optimizer:
    """Adam with per-layer rates relative to each layer's weights, or SGD with momentum at the rate ``lr``."""
    if settings["optimizer"] == "sgd":
        parameters = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(parameters, lr=lr, momentum=MOMENTUM, weight_decay=settings["weight_decay"])
    # fused: one kernel a parameter group instead of ~10 small ops a parameter
    return torch.optim.Adam(scaled_lr_groups(model, lr), fused=True, weight_decay=settings["weight_decay"])


def _cosine(final: float, progress: float) -> float:
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def search_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, search_steps: int, settings: dict):
    """One cosine over warm-up and search down to 0 (ours), or one per phase down to ``final_lr_fraction``."""
    total = warmup_steps + search_steps
    if settings["lr_schedule"] == "one-cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: search_lr_factor(step, warmup_steps, search_steps, settings["final_lr_fraction"]))


def search_lr_factor(step: int, warmup_steps: int, search_steps: int, final: float) -> float:
    """The per-phase schedule: a cosine 1 -> ``final`` over the warm-up, then again over the search."""
    start, length = (0, warmup_steps) if step < warmup_steps else (warmup_steps, search_steps)
    return _cosine(final, (step - start) / max(1, length))


def finetune_lr_factor(step: int, stages: tuple[int, int, int], final: float, restart_steps: int = 0) -> float:
    """Stage 1: a cosine 1 -> ``final``, restarted after ``restart_steps``, then after twice that, and so on
    (SGDR; 0: no restarts); stage 2: a cosine 1 -> ``final``; stage 3: ``final`` -> 0."""
    first, second, third = stages
    if step < first:
        start, length = 0, first
        if restart_steps > 0:
            start, length = 0, restart_steps
            while step >= start + length:
                start, length = start + length, 2 * length
            length = min(length, first - start)
        return _cosine(final, (step - start) / max(1, length))
    if step < first + second:
        return _cosine(final, (step - first) / max(1, second))
    return final * _cosine(0.0, (step - first - second) / max(1, third))


def batches(source: Iterator[tuple[torch.Tensor, torch.Tensor]], settings: dict,
            rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``source``, augmented when ``augment`` is "paper"."""
    if settings["augment"] == "none":
        yield from source
        return
    for images, labels in source:
        yield augment(images, rng), labels


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Appendix E's augmentation of an NHWC batch: a horizontal flip with probability 1/2, a random crop
    after zero padding, a cutout square (zeros) at a random centre, both scaled from 32 pixels to the
    image's height."""
    count, height, width, _ = images.shape
    scale = height / CUTOUT_AT
    pad, cut = max(1, round(CROP_PADDING * scale)), max(1, round(CUTOUT * scale))
    flips = torch.from_numpy(rng.random(count) < 0.5).to(images.device)
    images = torch.where(flips.view(-1, 1, 1, 1), images.flip(2), images)
    padded = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))
    rows, columns = rng.integers(0, 2 * pad + 1, count), rng.integers(0, 2 * pad + 1, count)
    out = torch.stack([padded[i, r:r + height, c:c + width] for i, (r, c) in enumerate(zip(rows, columns))])
    centre_rows, centre_columns = rng.integers(0, height, count), rng.integers(0, width, count)
    for i, (r, c) in enumerate(zip(centre_rows, centre_columns)):
        out[i, max(0, r - cut // 2):r + (cut + 1) // 2, max(0, c - cut // 2):c + (cut + 1) // 2] = 0.0
    return out
