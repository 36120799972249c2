"""The main job: train on the dataset, make compressed candidates, measure each, report.

Everything it makes is kept under the output directory, keyed by the settings that made it: the
pretrained supernet (``cache/``), each candidate (``candidates/<key>/<name>/``) and each
measurement (the store), so a killed run started again redoes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from harness import candidate as candidate_io
from harness.data import load_dataset
from harness.errors import HarnessError
from harness.pipeline import Evaluation, Pipeline, elapsed, progress
from results.report import write_report
from results.store import Store
from targets import get_target


def run_job(config: dict, out_dir: Path, store: Store, quiet: bool = False, force: bool = False) -> tuple[int, list[dict], Path]:
    started = time.perf_counter()
    settings = config["run"]
    target = get_target(settings["target"], **config["vela"])
    reason = target.available()
    if reason:
        raise HarnessError(f"target {target.name} is not usable here: {reason}")
    dataset = load_dataset(settings["dataset"], settings["data_path"] or None)

    from search.strategy import UniformCompression  # torch loads only when training is needed

    search = {k: v for k, v in config["search"].items()}
    strategy = UniformCompression(dataset, quiet=quiet, **search)
    job_key = hashlib.sha256(json.dumps({"dataset": dataset.name, "search": search}, sort_keys=True).encode()).hexdigest()[:12]
    candidates_dir = out_dir / "candidates" / job_key
    pipeline = Pipeline(out_dir, store, target, Evaluation(dataset, config["measure"]["eval_samples"]),
                        config["measure"]["calibration_samples"], force, config["measure"]["allow_cpu_ops"])
    run_id = store.start_run("run", config, pipeline.provenance)
    records: list[dict] = []
    status = "failed"
    try:
        folded = None
        names = strategy.candidate_names()
        for (bits, nonzero), name in progress(zip(strategy.pairs(), names), len(names), "candidates", quiet):
            directory = candidates_dir / name
            if (directory / "spec.json").is_file():
                candidate = candidate_io.load(directory)
            else:
                if folded is None:
                    folded = strategy.folded_supernet(_pretrained(strategy, out_dir / "cache" / f"pretrain-{job_key}.pt"))
                candidate = strategy.finetune_candidate(folded, bits, nonzero)
                candidate.save(directory)
            record = pipeline.measure_candidate(candidate, run_id)
            store.link(run_id, record["id"])
            records.append(record)
            _say(_summary(record), quiet)
        status = "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        store.finish_run(run_id, status)
    report = write_report(store.measurements(run_id), out_dir / "reports" / f"run-{run_id}", title=f"UDC harness run {run_id} ({target.name})")
    _say(f"run {run_id}: {len(records)} candidates on {target.name} in {elapsed(started)}; report: {report}", quiet)
    return run_id, records, report


def _pretrained(strategy, path: Path):
    import torch

    if path.is_file():
        return torch.load(path, weights_only=True)
    state = strategy.pretrain()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)
    return state


def _summary(record: dict) -> str:
    name = record.get("candidate_name")
    if record.get("status") != "ok":
        return f"{name}: FAILED: {record.get('error')}"
    accuracy = record.get("accuracy_int8")
    accuracy_text = f", int8 accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
    cached = " (cached)" if record.get("cached") else ""
    return f"{name}: flash {record['flash_bytes'] / 1024:.1f} KiB{accuracy_text}{cached}"


def _say(line: str, quiet: bool) -> None:
    if not quiet:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
