"""The cost providers the harness hands to search strategies: what a search cannot count itself because
it needs a compiler or Vela's weight codec (``search.cost.OperatorCycles``, ``search.flash_cost``).

``providers(config)`` makes them for the config's Vela settings (accelerator, system config, memory
mode):
- ``operator_cycles``: Vela's cycle estimate per operator (UNAS's latency table);
- ``deployed_figures``: a candidate exported to int8 and compiled: Vela's Flash, SRAM, NPU cycles and
  MACs, with the Flash model's features of the same model. Cached on disk by the candidate's content,
  the Vela settings and Vela's version, so a Flash model calibrated once is not compiled again;
- ``weight_encoder``: the bytes of one layer's int8 codes in Vela's weight codec.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.candidate import Candidate


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "udc-harness" / "vela-figures"


def vela_operator_cycles(settings, candidate: Candidate, calibration: np.ndarray) -> list[tuple[str, float]]:
    """Vela's cycle estimate per operator of the candidate exported to int8 and compiled."""
    from harness.export import to_int8_tflite
    from targets.vela_compiler import per_operator_cycles

    return per_operator_cycles(to_int8_tflite(candidate, calibration), settings)


def deployed_figures(settings, candidate: Candidate, calibration: np.ndarray) -> dict:
    """Vela's figures of the candidate as deployed and the Flash model's features of it (``key`` names the
    Vela settings and version they hold for)."""
    from harness.export import to_int8_tflite
    from targets.vela_compiler import compile_model, vela_version
    from targets.vela_weights import flash_features

    key = json.dumps({**settings.as_dict(), "vela": vela_version()}, sort_keys=True)
    digest = hashlib.sha256(f"{candidate.content_hash}|{key}".encode()).hexdigest()[:32]
    path = _cache_dir() / f"{digest}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a torn or unreadable entry is measured again
    tflite = to_int8_tflite(candidate, calibration)
    compiled = compile_model(tflite, settings, label=candidate.name)
    figures = {"flash_bytes": compiled.flash_bytes, "sram_bytes": compiled.sram_bytes,
               "npu_cycles": compiled.npu_cycles, "mac_count": compiled.mac_count,
               "features": flash_features(tflite, settings.accelerator), "key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(figures))
    temporary.replace(path)
    return figures


def weight_encoder(accelerator: str, volume: np.ndarray, depthwise: bool) -> int:
    from targets.vela_weights import encoded_bytes

    return encoded_bytes(volume, depthwise, accelerator)


def providers(config: dict | None = None) -> dict[str, Callable]:
    """Every provider, for the Vela settings of ``config`` (its ``[vela]`` section; Vela's defaults without one)."""
    from targets.vela_compiler import VelaSettings

    settings = VelaSettings.from_options(**((config or {}).get("vela") or {}))
    return {"operator_cycles": functools.partial(vela_operator_cycles, settings),
            "deployed_figures": functools.partial(deployed_figures, settings),
            "weight_encoder": functools.partial(weight_encoder, settings.accelerator)}
