"""The pipeline and its cache: candidate or .tflite -> export -> target -> store.

A measurement is keyed by (content hash, settings key). The settings key covers the target,
its settings, the tool versions, the evaluation data and, for a candidate, the calibration
images its int8 model is exported with, so an unchanged candidate on unchanged tools is a cache
hit (no export, no compile) and a killed run resumes with what is missing. Exported models are
kept as ``<out>/artifacts/<hash>/model_int8-<calibration key>.tflite`` and reused only with the
same calibration: the activation ranges, and with them every int8 figure, depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import candidate as candidate_io
from core.candidate import Candidate
from core.data import Dataset
from core.errors import HarnessError, UsageError
from core.search_result import SearchResult
from core.tflite_model import read_tflite, require_int8
from harness.measure import measure_model
from harness.provenance import provenance
from results.store import Store
from targets.base import Target


def ensure_writable(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output directory {out_dir} is not writable ({exc.strerror}); pass --out DIR somewhere writable") from None
    return out_dir


@dataclass
class Evaluation:
    """The test images a measurement's accuracy is computed on (None: no accuracy)."""

    dataset: Dataset | None
    samples: int  # 0 = the whole test set

    def images(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.dataset is None:
            return None, None
        count = len(self.dataset.x_test) if self.samples <= 0 else min(self.samples, len(self.dataset.x_test))
        return self.dataset.x_test[:count], self.dataset.y_test[:count]

    def key(self) -> dict:
        """Name, count and a digest of the images and labels: a dataset edited under its old name is new."""
        images, labels = self.images()
        if images is None:
            return {"dataset": None, "samples": 0}
        return {"dataset": self.dataset.name, "samples": len(images), "digest": _array_digest(images, labels)}


class Pipeline:
    def __init__(self, out_dir: Path, store: Store, target: Target, evaluation: Evaluation,
                 calibration_samples: int = 200, force: bool = False, allow_cpu_ops: bool = False):
        self.out_dir, self.store, self.target, self.evaluation = out_dir, store, target, evaluation
        self.calibration_samples, self.force, self.allow_cpu_ops = calibration_samples, force, allow_cpu_ops
        if calibration_samples < 1:
            raise UsageError(f"calibration_samples = {calibration_samples}: calibration needs at least 1 image; "
                             "set [measure] calibration_samples to 1 or more")
        self.provenance = provenance(target.tool_versions())
        self._settings = {"target": target.name, "settings": target.settings(),
                          "tools": self.provenance["tool_versions"], "evaluation": evaluation.key()}
        # The key of a measurement of a ready int8 .tflite, which no calibration touches.
        self.settings_key = _digest(self._settings)

    def candidate_settings_key(self, candidate: Candidate) -> str:
        """The settings key of a candidate's measurement: the settings plus its calibration."""
        calibration = self.calibration_key(tuple(candidate.spec["input_shape"]))
        return _digest({**self._settings, "calibration": calibration})

    def _cached(self, content_hash: str, settings_key: str) -> dict | None:
        if self.force:
            return None
        row = self.store.find_measurement(content_hash, settings_key)
        if row is not None:
            row["cached"] = True
        return row

    def _record(self, run_id: int | None, base: dict, settings_key: str, measured: dict | None,
                error: str | None) -> dict:
        record = {**base, "target": self.target.name, "target_settings": self.target.settings(),
                  "settings_key": settings_key, **self.provenance}
        if error is None:
            record.update(measured)
            record["status"] = "ok"
        else:
            record.update(status="failed", error=error)
        record["id"] = self.store.add_measurement(run_id, record)
        record["cached"] = False
        return record

    def measure_candidate(self, candidate: Candidate, run_id: int | None = None) -> dict:
        """Measure one candidate; a failure is stored as a failed row and returned, never raised."""
        content_hash = candidate.content_hash
        settings_key = self.candidate_settings_key(candidate)
        cached = self._cached(content_hash, settings_key)
        if cached is not None:
            return cached
        meta = candidate.spec.get("meta", {})
        base = {"candidate_hash": content_hash, "candidate_name": candidate.name, "strategy": meta.get("strategy"),
                "accuracy_float": meta.get("accuracy_float"), "dataset": meta.get("dataset")}
        searched = {key: meta[key] for key in SearchResult.row_keys() if key in meta}
        if searched:
            base["search"] = searched
        try:
            tflite = self.export(candidate)
            images, labels = self.evaluation.images()
            measured = measure_model(tflite, read_tflite(tflite, label=candidate.name), self.target,
                                     self.artifact_dir(content_hash), candidate.name, candidate, images, labels,
                                     self.allow_cpu_ops)
        except HarnessError as exc:
            return self._record(run_id, base, settings_key, None, str(exc))
        return self._record(run_id, base, settings_key, measured, None)

    def measure_tflite(self, path: Path, run_id: int | None = None) -> dict:
        """Measure a bring-your-own int8 .tflite; a file that is no int8 TFLite model raises UsageError."""
        info = read_tflite(path)
        require_int8(info, str(path))
        data = path.read_bytes()
        content_hash = hashlib.sha256(data).hexdigest()
        cached = self._cached(content_hash, self.settings_key)
        if cached is not None:
            return cached
        base = {"candidate_hash": content_hash, "candidate_name": path.stem, "strategy": "tflite"}
        images, labels = self.evaluation.images()
        if images is not None and images.shape[1:] != info.input.shape[1:]:
            raise UsageError(f"{path}: model input {info.input.shape[1:]} does not fit {self.evaluation.dataset.name} "
                             f"images {images.shape[1:]}; pass the dataset the model was trained on, or none")
        try:
            measured = measure_model(data, info, self.target, self.artifact_dir(content_hash), path.stem, None,
                                     images, labels, self.allow_cpu_ops)
        except HarnessError as exc:
            return self._record(run_id, base, self.settings_key, None, str(exc))
        return self._record(run_id, base, self.settings_key, measured, None)

    def artifact_dir(self, content_hash: str) -> Path:
        return self.out_dir / "artifacts" / content_hash[:16]

    def exported_path(self, candidate: Candidate) -> Path:
        """Where the candidate's int8 model exported with this pipeline's calibration is kept."""
        calibration = self.calibration_key(tuple(candidate.spec["input_shape"]))
        return self.artifact_dir(candidate.content_hash) / f"model_int8-{calibration}.tflite"

    def export(self, candidate: Candidate) -> bytes:
        """The candidate's int8 TFLite, from the artifact cache when it was exported with this calibration."""
        from harness.export import to_int8_tflite

        path = self.exported_path(candidate)
        if path.is_file() and not self.force:
            return path.read_bytes()
        tflite = to_int8_tflite(candidate, self.calibration_images(tuple(candidate.spec["input_shape"])))
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(tflite)
        temporary.replace(path)
        return tflite

    def calibration_images(self, shape: tuple[int, ...]) -> np.ndarray:
        """Training images set the activation ranges; without a dataset, uniform noise in [0, 1] does."""
        dataset = self.evaluation.dataset
        if self._calibrates_with_dataset(shape):
            step = max(1, len(dataset.x_train) // self.calibration_samples)
            return dataset.x_train[::step][: self.calibration_samples]
        return np.random.default_rng(0).random((self.calibration_samples, *shape), dtype=np.float32)

    def calibration_key(self, shape: tuple[int, ...]) -> str:
        """Names the calibration images of one input shape: their source (training images or noise),
        count and a digest of their values, so that any other images make another key."""
        images = self.calibration_images(shape)
        source = "train" if self._calibrates_with_dataset(shape) else "noise"
        return f"{source}-{len(images)}-{_array_digest(images)}"

    def _calibrates_with_dataset(self, shape: tuple[int, ...]) -> bool:
        dataset = self.evaluation.dataset
        return dataset is not None and dataset.input_shape == shape


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def load_candidates(paths: list[Path]) -> list[Candidate]:
    """Each path is a candidate directory, or a directory of candidate directories."""
    found = []
    for path in paths:
        if (path / "spec.json").is_file():
            found.append(candidate_io.load(path))
        elif path.is_dir() and any((child / "spec.json").is_file() for child in path.iterdir()):
            found.extend(candidate_io.load(child) for child in sorted(path.iterdir()) if (child / "spec.json").is_file())
        else:
            raise UsageError(f"{path}: not a candidate directory (no spec.json in it or its subdirectories)")
    return found


def progress(iterable, total: int, description: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="model", disable=True if quiet else None,
                file=sys.stderr, dynamic_ncols=True)


def elapsed(started: float) -> str:
    seconds = time.perf_counter() - started
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"
