"""The pretrained supernet every search starts from, and the settings it depends on (its cache key)."""

from __future__ import annotations

import torch

from core.data import Dataset
from search.strategy.uniform import UniformCompression


def pretrain_key(settings: dict) -> dict:
    """The settings the pretrained supernet depends on: a cache key for ``pretrain_state``."""
    keys = ("supernet", "bit_options", "nonzero_options", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "seed")
    return {key: settings[key] for key in keys}


def pretrain_state(dataset: Dataset, settings: dict, quiet: bool = False) -> dict[str, torch.Tensor]:
    """The float supernet trained with BatchNorm, folded: where every search starts."""
    s = settings
    return UniformCompression(
        dataset, s["supernet"], bits=s["bit_options"], nonzero=s["nonzero_options"], pretrain_epochs=s["pretrain_epochs"],
        batch_size=s["pretrain_batch_size"], lr=s["pretrain_lr"], seed=s["seed"], quiet=quiet, device=s["device"]).pretrain()
