"""A measurement's per-sample predictions, kept compactly in its stored row so that two measurements on
the same samples can be judged pair by pair (``results.paired``): the predicted classes (uint16, zlib,
base64) and whether each was right (one bit a sample)."""

from __future__ import annotations

import base64
import zlib

import numpy as np

FORMAT = "predictions/1"


def encode(predictions: np.ndarray, labels: np.ndarray) -> dict:
    predictions = np.asarray(predictions).astype(np.uint16)
    correct = predictions == np.asarray(labels)
    return {"format": FORMAT, "count": int(predictions.size),
            "classes": base64.b64encode(zlib.compress(predictions.tobytes(), 9)).decode("ascii"),
            "correct": base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")}


def decode(stored: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(predicted classes, correct flags), or None for anything that is not a stored prediction array."""
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        return None
    try:
        count = int(stored["count"])
        classes = np.frombuffer(zlib.decompress(base64.b64decode(stored["classes"])), np.uint16)
        correct = np.unpackbits(np.frombuffer(base64.b64decode(stored["correct"]), np.uint8))[:count].astype(bool)
    except (KeyError, ValueError, TypeError, zlib.error):
        return None
    return (classes, correct) if classes.size == count == correct.size else None
