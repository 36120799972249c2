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
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import candidate as candidate_io
from core.candidate import Candidate
from core.data import Dataset
from core.errors import HarnessError, ModelError, UsageError
from core.search_result import SearchResult
from core.supervised import worker
from core.tflite_model import read_tflite, require_int8
from harness.measure import measure_device, measure_model
from harness.provenance import provenance
from results.store import Store
from targets.base import Target

log = logging.getLogger("harness")
CONVERTER = "TF converter"
CONVERT_SECONDS = 900.0  # the main job's candidates convert in 2-5 s; a 96x96 MobileNetV2 in about 30 s


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
                 calibration_samples: int = 200, force: bool = False, allow_cpu_ops: bool = False,
                 retry_failed: bool = False):
        self.out_dir, self.store, self.target, self.evaluation = out_dir, store, target, evaluation
        self.calibration_samples, self.force, self.allow_cpu_ops = calibration_samples, force, allow_cpu_ops
        self.retry_failed = retry_failed
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
        """The stored measurement, or a stored failure the model itself caused (measuring again would fail
        again) unless ``retry_failed``; None when it must be measured."""
        if self.force:
            return None
        row = self.store.find_measurement(content_hash, settings_key, model_failures=not self.retry_failed)
        if row is not None:
            row["cached"] = True
        return row

    def _record(self, run_id: int | None, base: dict, settings_key: str, measured: dict | None,
                error: Exception | None) -> dict:
        record = {"evaluation": self._settings["evaluation"], **base, "target": self.target.name,
                  "target_settings": self.target.settings(), "settings_key": settings_key, **self.provenance}
        if error is None:
            record.update(measured)
            record["status"] = "ok"
        elif isinstance(error, HarnessError):
            record.update(status="failed", error=str(error))
            if isinstance(error, ModelError):
                record["model_failure"] = True
        else:  # a bug: the row says what, the traceback goes to a log file (and the terminal under --debug)
            path = self.out_dir / "logs" / f"{base['candidate_hash'][:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            text = getattr(error, "remote_traceback", None) or "".join(traceback.format_exception(error))
            path.write_text(text)
            log.debug("%s: unexpected error\n%s", base["candidate_name"], text)
            detail = f"{type(error).__name__}: {error}" if not hasattr(error, "remote_traceback") else str(error)
            record.update(status="failed", error=f"{base['candidate_name']}: unexpected {detail} (traceback: {path})",
                          log=str(path))
        record["id"] = self.store.add_measurement(run_id, record)
        record["cached"] = False
        return record

    def measure_candidate(self, candidate: Candidate, run_id: int | None = None) -> dict:
        """Measure one candidate; a failure is stored as a failed row and returned, never raised. Processes
        measuring the same candidate under the same settings at once store one row: the others wait and
        find it."""
        content_hash = candidate.content_hash
        settings_key = self.candidate_settings_key(candidate)
        with self.store.measurement_lock(content_hash, settings_key):
            return self._measure_candidate(candidate, content_hash, settings_key, run_id)

    def _measure_candidate(self, candidate: Candidate, content_hash: str, settings_key: str,
                           run_id: int | None) -> dict:
        cached = self._cached(content_hash, settings_key)
        if cached is not None:
            return cached
        meta = candidate.spec.get("meta", {})
        base = {"candidate_hash": content_hash, "candidate_name": candidate.name, "strategy": meta.get("strategy"),
                "accuracy_float": meta.get("accuracy_float"), "dataset": meta.get("dataset"),
                # what 'regress' checks two measurements share: the test images and the int8 export's calibration
                "evaluation": {**self._settings["evaluation"],
                               "calibration": self.calibration_key(tuple(candidate.spec["input_shape"]))}}
        searched = {key: meta[key] for key in SearchResult.row_keys() if key in meta}
        if searched:
            base["search"] = searched
        try:
            tflite = self.export(candidate)
            images, labels = self.evaluation.images()
            measured = measure_model(tflite, read_tflite(tflite, label=candidate.name), self.target,
                                     self.artifact_dir(content_hash), candidate.name, candidate, images, labels,
                                     self.allow_cpu_ops)
            measured.update(flash_prediction(meta, tflite, self.target.settings()))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one candidate never takes the run down
            return self._record(run_id, base, settings_key, None, exc)
        return self._record(run_id, base, settings_key, measured, None)

    def measure_tflite(self, path: Path, run_id: int | None = None) -> dict:
        """Measure a bring-your-own int8 .tflite; a file that is no int8 TFLite model raises UsageError."""
        info = read_tflite(path)
        require_int8(info, str(path))
        data = path.read_bytes()
        content_hash = hashlib.sha256(data).hexdigest()
        with self.store.measurement_lock(content_hash, self.settings_key):
            return self._measure_tflite(path, info, data, content_hash, run_id)

    def _measure_tflite(self, path: Path, info, data: bytes, content_hash: str, run_id: int | None) -> dict:
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
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one model never takes the run down
            return self._record(run_id, base, self.settings_key, None, exc)
        return self._record(run_id, base, self.settings_key, measured, None)

    def measure_device(self, path: Path | None, run_id: int | None = None) -> dict:
        """Measure the model on a device that holds it (``target.holds_model``), named by the .tflite at
        ``path`` when given, else by the device; never from the cache, since a device can be flashed anew
        under the same name."""
        data = info = None
        if path is not None:
            info = read_tflite(path)
            require_int8(info, str(path))
            data = path.read_bytes()
        identity = self.target.identity()
        content_hash = hashlib.sha256(data or json.dumps(identity, sort_keys=True).encode()).hexdigest()
        name = path.stem if path is not None else f"{identity.get('model') or 'model'}@{identity['name']}"
        base = {"candidate_hash": content_hash, "candidate_name": name, "strategy": "device"}
        images, labels = self.evaluation.images()
        try:
            measured = measure_device(self.target, data, info, self.artifact_dir(content_hash), name, images, labels)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one model never takes the run down
            return self._record(run_id, base, self.settings_key, None, exc)
        return self._record(run_id, base, self.settings_key, measured, None)

    def artifact_dir(self, content_hash: str) -> Path:
        return self.out_dir / "artifacts" / content_hash[:16]

    def exported_path(self, candidate: Candidate) -> Path:
        """Where the candidate's int8 model exported with this pipeline's calibration is kept."""
        calibration = self.calibration_key(tuple(candidate.spec["input_shape"]))
        return self.artifact_dir(candidate.content_hash) / f"model_int8-{calibration}.tflite"

    def export(self, candidate: Candidate) -> bytes:
        """The candidate's int8 TFLite, from the artifact cache when it was exported with this calibration.
        The TF converter runs in its worker process (``core.supervised``): a crash fails this candidate."""
        from harness.export import check_deployable, to_int8_tflite

        path = self.exported_path(candidate)
        if path.is_file() and not self.force:
            return path.read_bytes()
        check_deployable(candidate)  # before the worker: a spec error is no conversion's
        tflite = worker(CONVERTER).call(to_int8_tflite, candidate,
                                        self.calibration_images(tuple(candidate.spec["input_shape"])),
                                        label=candidate.name, doing="converting", timeout=CONVERT_SECONDS,
                                        log=path.parent / "converter.log")
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


def flash_prediction(meta: dict, tflite: bytes, target_settings: dict) -> dict:
    """``flash_predicted_bytes``: what the Flash model a search calibrated (``meta["flash_model"]``) predicts
    for this int8 model, stored beside Vela's figure; nothing for a candidate without one."""
    from core.flash_model import FlashModel
    from targets.vela_weights import flash_features

    model = FlashModel.from_meta(meta.get("flash_model"))
    if model is None:
        return {}
    accelerator = target_settings.get("accelerator") or "ethos-u55-128"
    return {"flash_predicted_bytes": round(model.predict(flash_features(tflite, accelerator)))}


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
