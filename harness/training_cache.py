"""What training made, kept under the output directory and keyed by the settings that made it, so a
run or search started again reuses it: pretrained supernets (``cache/``) and candidates
(``candidates/<training key>/<name>/``).

``training_key`` is a hash of the training settings (dataset, strategy, settings); it is not the
measurement's ``settings_key``, which hashes how a candidate is measured.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path


def training_key(*parts) -> str:
    """12 hex digits of the SHA-256 of ``parts`` as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def pretrain_path(out_dir: Path, dataset_name: str, udc_settings: dict) -> Path:
    """Where the searches' pretrained supernet for these settings is kept (one for every strategy)."""
    from search.strategy.pretrain import pretrain_key

    return Path(out_dir) / "cache" / f"pretrain-udc-{training_key(dataset_name, pretrain_key(udc_settings))}.pt"


def cached_pretrain(path: Path, train: Callable):
    """The state dict at ``path``, or ``train()``'s, saved there atomically."""
    import torch

    if path.is_file():
        return torch.load(path, weights_only=True)
    state = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)
    return state
