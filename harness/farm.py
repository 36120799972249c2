"""A board farm: candidates measured by Dask workers on several hosts, each worker advertising the
targets attached to it as Dask resources (``dask worker SCHEDULER --resources "qemu-an547=1"``), all
writing to one shared store (a PostgreSQL URL). Dask schedules, retries and moves the work; a task
that runs twice finds the first measurement in the store (the cache) and adds no second row.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import HarnessError, UsageError


def measure_on_worker(candidate_dir: str, target_name: str, store_url: str, out_dir: str, dataset: str | None,
                      eval_samples: int, config: dict | None = None) -> dict:
    """One task: measure one candidate on this worker's target, store the row, return a summary. ``config``
    (a loaded config) gives the target its options and the measurement its settings; without one, the
    target's defaults and environment variables on the worker."""
    import socket

    from core import candidate as candidate_io
    from core.data import load_dataset
    from harness.pipeline import Evaluation, Pipeline
    from results.store import Store
    from harness.config import load_config
    from targets import open_target

    config = config or load_config()
    candidate = candidate_io.load(Path(candidate_dir))
    try:
        target = open_target(config, target_name)
    except HarnessError as error:
        raise HarnessError(f"{socket.gethostname()}: {error}") from None
    evaluation = Evaluation(load_dataset(dataset) if dataset else None, eval_samples)
    measure = config["measure"]
    with Store(store_url) as store:
        record = Pipeline(Path(out_dir), store, target, evaluation, measure["calibration_samples"],
                          allow_cpu_ops=measure["allow_cpu_ops"]).measure_candidate(candidate)
    return {"candidate": record.get("candidate_name"), "status": record.get("status"), "id": record.get("id"),
            "cached": bool(record.get("cached")), "flash_bytes": record.get("flash_bytes"),
            "worker_host": socket.gethostname(), "error": record.get("error")}


def candidate_directories(paths: list[Path]) -> list[Path]:
    """Each path is a candidate directory, or a directory of candidate directories."""
    found = []
    for path in paths:
        if (path / "spec.json").is_file():
            found.append(path)
        elif path.is_dir() and any((child / "spec.json").is_file() for child in path.iterdir()):
            found.extend(child for child in sorted(path.iterdir()) if (child / "spec.json").is_file())
        else:
            raise UsageError(f"{path}: not a candidate directory (no spec.json in it or its subdirectories)")
    return [path.resolve() for path in found]


def submit(scheduler: str, candidate_dirs: list[Path], target_name: str, store_url: str, out_dir: Path,
           dataset: str | None = None, eval_samples: int = 0, quiet: bool = False,
           config: dict | None = None) -> list[dict]:
    """Measure every candidate on a worker offering ``target_name``; the summaries in candidate order."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("the board farm needs Dask: pip install 'udc-harness[farm]' (or: pip install distributed)") \
            from None
    if not store_url.startswith(("postgresql", "mysql")) and not quiet:
        print("warning: the farm's workers share one store; an SQLite file only works when every worker "
              "sees the same file system", file=sys.stderr)
    with Client(scheduler, timeout="30s") as client:
        futures = {client.submit(measure_on_worker, str(path), target_name, store_url, str(out_dir), dataset,
                                 eval_samples, config, resources={target_name: 1}, pure=False): index
                   for index, path in enumerate(candidate_dirs)}
        results: list[dict | None] = [None] * len(candidate_dirs)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if not quiet:
                summary = results[futures[future]]
                print(f"{summary['candidate']}: {summary['status']} on {summary['worker_host']}"
                      + (" (cached)" if summary["cached"] else ""), file=sys.stderr)
    return results
