"""The measure job: candidates and .tflite files measured on one target into the store, as one run.

The command (``harness.commands.measure``) reads the arguments and prints; this module chooses the
evaluation dataset, checks the candidates fit it, and measures every model ``repeat`` times, handing
each stored record to ``on_record`` as it comes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.candidate import Candidate
from core.data import Dataset, load_dataset
from core.errors import UsageError
from harness.pipeline import Evaluation, Pipeline, progress
from results.store import Store
from targets.base import Target


def evaluation_dataset(candidates: list[Candidate], name: str | None, data_path: str | None) -> Dataset | None:
    """The dataset for accuracy: ``name``, else the candidates' own; None for none. Every candidate must take
    its images and classes."""
    name = name or next((c.spec.get("meta", {}).get("dataset") for c in candidates
                         if c.spec.get("meta", {}).get("dataset")), None)
    dataset = load_dataset(name, data_path) if name else None
    for candidate in candidates if dataset is not None else ():
        shape, classes = tuple(candidate.spec["input_shape"]), candidate.spec["num_classes"]
        if shape != tuple(dataset.input_shape) or classes != dataset.num_classes:
            raise UsageError(f"candidate {candidate.name} takes {'x'.join(map(str, shape))} images in {classes} classes, "
                             f"but {dataset.name} has {'x'.join(map(str, dataset.input_shape))} in "
                             f"{dataset.num_classes}; pass the dataset it was trained on (--dataset)")
    return dataset


def measure_job(config: dict, target: Target, store: Store, out_dir: Path, candidates: list[Candidate],
                tflites: list[Path], evaluation: Evaluation, described: dict, repeat: int = 1, force: bool = False,
                quiet: bool = False, on_record: Callable[[dict], None] = lambda record: None,
                retry_failed: bool = False) -> tuple[int, int]:
    """Measure every model ``repeat`` times (repeats always re-measure) in one stored run, ``described`` (what
    was asked for) stored with it beside the target and its settings; return (failed, measured)."""
    if repeat < 1:
        raise UsageError(f"--repeat {repeat} must be at least 1")
    pipeline = Pipeline(out_dir, store, target, evaluation, calibration_samples=config["measure"]["calibration_samples"],
                        force=force, allow_cpu_ops=bool(config["measure"]["allow_cpu_ops"]), retry_failed=retry_failed)
    run_id = store.start_run("measure", {**described, "target": target.name, "settings": target.settings()},
                             pipeline.provenance)
    if getattr(target, "holds_model", False):  # the model is on the device: measured once, named by a .tflite
        jobs = [(pipeline.measure_device, path) for path in tflites or [None]]
    else:
        jobs = [(pipeline.measure_candidate, c) for c in candidates] + [(pipeline.measure_tflite, p) for p in tflites]
    jobs = [(again, *job) for again in range(repeat) for job in jobs]
    failed, status = 0, "failed"
    try:
        for again, measure, item in progress(jobs, len(jobs), "measure", quiet):
            pipeline.force = force or again > 0
            record = measure(item, run_id)
            store.link(run_id, record["id"])
            failed += record.get("status") != "ok"
            on_record(record)
        status = "failed" if failed else "ok"
    finally:
        store.finish_run(run_id, status)
    return failed, len(jobs)
