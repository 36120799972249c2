"""A dataset written the way MLPerf Tiny's runner reads one (``benchmark/runner/datasets.py``), so the
runner can drive our firmware (or any device) on our images: ``DIR/<model id>/y_labels.csv`` with a
row ``file, classes, class`` per sample, and each sample a file of the bytes the runner sends as they
are, in the device's input format (docs/protocol.md: uint8 = int8 + 128 for ic01 and vww01)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from targets.mlperf_models import encode_input


def write_runner_dataset(inputs: np.ndarray, labels: np.ndarray, classes: int, model_id: str, input_format: str,
                         out_dir: Path) -> Path:
    """Write int8 ``inputs`` with their ``labels`` for a device of ``model_id`` taking ``input_format``;
    the folder the runner's ``--dataset_path`` points at holds the returned one."""
    folder = out_dir / model_id
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "y_labels.csv", "w", newline="") as table:
        rows = csv.writer(table)
        for index, (sample, label) in enumerate(zip(inputs, labels)):
            name = f"sample_{index:05d}.bin"
            (folder / name).write_bytes(encode_input(sample, input_format))
            rows.writerow([name, classes, int(label)])
    return folder
