"""The main job: train on the dataset, make compressed candidates, measure each, report.

Candidates come from the uniform sweep (every (bits, nonzero) pair), from searches under each
budget (UDC, vanilla DNAS, random search, the seed peers Zur et al., UNAS and NeuralScale) and, with ``run.ablation = "table3"``, from the rows of
the UDC paper's Table 3. Everything made is kept under the output directory, keyed by the settings
that made it: pretrained supernets (``cache/``), candidates (``candidates/<key>/<name>/``) and
measurements (the store), so a killed run started again redoes only what is missing.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core import candidate as candidate_io
from core.data import Dataset, load_dataset
from core.search_result import SearchResult
from core.budgets import parse_budgets
from harness.cost_providers import providers
from harness.pipeline import Evaluation, Pipeline, elapsed, progress
from harness.training_cache import cached_pretrain, pretrain_path, training_key
from results.report import write_report
from results.store import Store
from targets import open_target


def run_job(config: dict, out_dir: Path, store: Store, quiet: bool = False, force: bool = False,
            retry_failed: bool = False) -> tuple[int, list[dict], Path]:
    started = time.perf_counter()
    settings = config["run"]
    target = open_target(config)
    dataset = load_dataset(settings["dataset"], settings["data_path"] or None)
    jobs = candidate_jobs(config, dataset, out_dir, quiet)
    pipeline = Pipeline(out_dir, store, target, Evaluation(dataset, config["measure"]["eval_samples"]),
                        config["measure"]["calibration_samples"], force, config["measure"]["allow_cpu_ops"],
                        retry_failed)
    run_id = store.start_run("run", config, pipeline.provenance)
    records: list[dict] = []
    status = "failed"
    try:
        for directory, make in progress(jobs, len(jobs), "candidates", quiet):
            if (directory / "spec.json").is_file():
                candidate = candidate_io.load(directory)
            else:
                candidate = make()
                candidate.save(directory)
            record = pipeline.measure_candidate(candidate, run_id)
            store.link(run_id, record["id"])
            records.append(record)
            _say(_summary(record, candidate.spec.get("meta", {})), quiet)
        status = "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        store.finish_run(run_id, status)
    report = write_report(store.measurements(run_id), out_dir / "reports" / f"run-{run_id}", title=f"UDC harness run {run_id} ({target.name})")
    _say(f"run {run_id}: {len(records)} candidates on {target.name} in {elapsed(started)}; report: {report}", quiet)
    return run_id, records, report


def candidate_jobs(config: dict, dataset: Dataset, out_dir: Path, quiet: bool) -> list[tuple[Path, Callable]]:
    """(directory, make) per candidate of the run, in order, for each of ``run.seeds`` seeds (the config's
    seed, then the next ones; with more than one, every name ends in ``-seed<N>`` and every candidate records
    its seed); ``make`` trains only when called."""
    seeds = config["run"]["seeds"]
    jobs: list[tuple[Path, Callable]] = []
    for index in range(seeds):
        seed = config["search"]["seed"] + index
        seeded = {**config, "search": {**config["search"], "seed": seed}, "udc": {**config["udc"], "seed": seed}}
        jobs += [(directory, functools.partial(_seeded, make, seed, seeds > 1))
                 for directory, make in _jobs(seeded, dataset, out_dir, quiet)]
    return jobs


def _seeded(make: Callable, seed: int, suffix: bool):
    candidate = make()
    if suffix:
        candidate.spec["name"] = f"{candidate.name}-seed{seed}"
    candidate.spec.setdefault("meta", {})["seed"] = seed
    return candidate


def _jobs(config: dict, dataset: Dataset, out_dir: Path, quiet: bool) -> list[tuple[Path, Callable]]:
    from search.strategy.uniform import UniformCompression  # torch loads only when training is needed

    run = config["run"]
    jobs: list[tuple[Path, Callable]] = []
    if "uniform" in run["strategies"]:
        uniform = UniformCompression(dataset, quiet=quiet, **config["search"])
        key = training_key({"dataset": dataset.name, "search": config["search"]})
        folded: list = []  # the pretrained supernet, made by the first candidate that needs it

        def make_uniform(bits: int, nonzero: float):
            if not folded:
                folded.append(uniform.folded_supernet(cached_pretrain(out_dir / "cache" / f"pretrain-{key}.pt",
                                                                      uniform.pretrain)))
            return uniform.finetune_candidate(folded[0], bits, nonzero)

        for (bits, nonzero), name in zip(uniform.pairs(), uniform.candidate_names()):
            jobs.append((out_dir / "candidates" / key / name, lambda b=bits, s=nonzero: make_uniform(b, s)))
    jobs += search_jobs(config, dataset, out_dir, quiet)
    return jobs


def search_jobs(config: dict, dataset: Dataset, out_dir: Path, quiet: bool) -> list[tuple[Path, Callable]]:
    from search.strategy import MEASURING, STRATEGIES, search_and_finetune
    from search.strategy.ablation import TABLE3_ROWS, row_components, row_settings
    from search.strategy.emit import searched_name
    from search.strategy.pretrain import pretrain_state
    from search.strategy.udc import UDCSearch

    run, udc = config["run"], config["udc"]
    searching = any(s != "uniform" for s in run["strategies"]) or run["ablation"]
    budgets = [parse_budgets(b) for b in run["budgets"]] if searching else []
    given = providers(config)
    for limits in budgets:  # a budget outside the space fails now, not after an hour of training
        UDCSearch(dataset, settings=udc, quiet=True, budgets=limits, **{k: given[k] for k in MEASURING})

    pretrained_path = pretrain_path(out_dir, dataset.name, udc)

    def pretrained():
        return cached_pretrain(pretrained_path, lambda: pretrain_state(dataset, udc, quiet))

    def make(strategy: str, limits: dict, settings: dict, name: str, extra_meta: dict):
        candidate = search_and_finetune(dataset, strategy, limits, settings=settings, quiet=quiet,
                                        pretrained=pretrained(), providers=given)
        candidate.spec["name"] = name
        candidate.spec["meta"].update(extra_meta)
        return candidate

    jobs = []
    for budget in budgets:
        for strategy in (s for s in run["strategies"] if s != "uniform"):
            name = searched_name(strategy, udc["supernet"], budget)
            settings = STRATEGIES[strategy].settings(config)
            jobs.append((out_dir / "candidates" / training_key(dataset.name, strategy, settings) / name,
                         lambda s=strategy, b=budget, n=name, c=settings: make(s, b, c, n, {})))
        if run["ablation"] == "table3":
            for row in TABLE3_ROWS:
                settings, vanilla = row_settings(row, udc)
                name = searched_name(f"table3-{row}", udc["supernet"], budget)
                meta = {"ablation": {"table": "table3", "row": row, **row_components(row)}}
                jobs.append((out_dir / "candidates" / training_key(dataset.name, "table3", settings) / name,
                             lambda s=settings, v=vanilla, b=budget, n=name, m=meta:
                             make("dnas" if v else "udc", b, s, n, m)))
    return jobs


def _summary(record: dict, meta: dict) -> str:
    name = record.get("candidate_name")
    if record.get("status") != "ok":
        stored = " (stored failure; --retry-failed measures it again)" if record.get("cached") else ""
        return f"{name}: FAILED: {record.get('error')}{stored}"
    accuracy = record.get("accuracy_int8")
    accuracy_text = f", int8 accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
    cached = " (cached)" if record.get("cached") else ""
    budget = ""
    search = SearchResult.from_meta(meta)
    if search.budgets:
        budget = f"; {search.budget_line()}"
    return f"{name}: flash {record['flash_bytes'] / 1024:.1f} KiB{accuracy_text}{budget}{cached}"


def _say(line: str, quiet: bool) -> None:
    if not quiet:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
