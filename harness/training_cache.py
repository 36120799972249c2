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
    """12 hex digits of the SHA-256 of ``parts`` as canonical JSON. Where training ran (a settings dict's
    ``device``) is not part of what it made: a CPU run and a GPU run of the same settings share the key."""
    return hashlib.sha256(json.dumps([_placed_anywhere(part) for part in parts], sort_keys=True).encode()).hexdigest()[:12]


def _placed_anywhere(part):
    if isinstance(part, dict):
        return {key: _placed_anywhere(value) for key, value in part.items() if key != "device"}
    return part


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
