"""`report` on 1,000 stored measurements against `report` on a fifth of them (200), both timed in the same
run: the goal is that a report's time grows at most linearly with its rows, so five times the rows cost at
most 5.0x (a report is mostly a fixed number of plots, so it stays under that unless some cost per row
grows with the rows). The rows have
what a nightly store holds: candidates measured on vela over four nights and once on corstone300, searched
ones with per-layer decisions, so every section (fronts per strategy, decisions, estimate vs measurement,
history) is drawn in both reports. The time to read the rows from the store is recorded beside it."""

import datetime as dt
import statistics
import time

import numpy as np

from results.report import write_html, write_report
from results.store import Store
from tests.bench.goals import assert_goal

CANDIDATES, NIGHTS = 200, 4
SMALL_CANDIDATES = CANDIDATES // 5
SCALING_GOAL = CANDIDATES / SMALL_CANDIDATES  # linear in the rows
ROUNDS = 3
LAYERS = [f"b{i}_{part}" for i in range(8) for part in ("expand", "project")] + ["fc"]
HEADINGS = ("Pareto front per strategy", "Per-layer decisions", "Estimate vs measurement", "History")


def _records(rng, candidates):
    for index in range(candidates):
        budget = 24000 if index % 3 else None
        search = {"search": {"budget_bytes": budget, "size_bits": 8 * 23000.0, "constraint_met": True,
                             "decisions": {layer: {"bits": int(rng.choice([2, 4, 8])), "nonzero": 0.5, "width": 1.0,
                                                   "op": "conv"} for layer in LAYERS}}} if budget else {}
        common = {"candidate_name": f"c{index}", "candidate_hash": f"{index:064d}",
                  "strategy": ["uniform", "udc", "random", "zur"][index % 4], "accuracy_int8": float(rng.uniform(0.5, 0.9)),
                  "rhs_bound_bytes": float(rng.uniform(10e3, 80e3)), "empirical_entropy_bytes": float(rng.uniform(10e3, 80e3)),
                  "coded_mask_bytes": float(rng.uniform(10e3, 80e3)), "encoded_weight_bytes": int(rng.integers(10e3, 80e3)),
                  "target_settings": {"accelerator": "ethos-u55-128"}, "extra": search}
        flash = int(rng.integers(20e3, 100e3))
        for night in range(NIGHTS):
            yield {**common, "status": "ok", "target": "vela", "flash_bytes": flash + night, "latency_s": 1e-4,
                   "npu_cycles": 80000 + night, "created_at": dt.datetime(2026, 3, 1 + night, tzinfo=dt.timezone.utc)}
        yield {**common, "status": "ok", "target": "corstone300", "flash_bytes": flash + 250_000, "npu_cycles": 91000,
               "latency_is_estimate": False, "extra": {**search, "vela_npu_cycles": 80000}}


def _stored_run(store, candidates):
    run = store.start_run("run", {}, {})
    for record in _records(np.random.default_rng(0), candidates):
        store.add_measurement(run, record)
    return run


def test_report_time_grows_at_most_linearly_with_the_rows(benchmark, tmp_path):
    with Store.for_output_dir(tmp_path) as store:
        small, full = _stored_run(store, SMALL_CANDIDATES), _stored_run(store, CANDIDATES)
        started = time.perf_counter()
        rows = store.measurements(full)
        read_s = time.perf_counter() - started

        def report(run, folder):
            return write_html(write_report(store.measurements(run), tmp_path / folder))

        small_pages, small_times = [], []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            small_pages.append(report(small, "small").read_text())
            small_times.append(time.perf_counter() - started)
        page = benchmark.pedantic(report, args=(full, "full"), rounds=ROUNDS, iterations=1).read_text()
        small_rows = len(store.measurements(small))
    baseline, full_s = statistics.median(small_times), benchmark.stats.stats.median
    ratio = full_s / baseline
    benchmark.extra_info.update(rows=len(rows), small_rows=small_rows, small_report_s=baseline, report_s=full_s,
                                read_rows_s=read_s, report_vs_read_rows=full_s / read_s)
    print(f"\nreport of {len(rows)} measurements (markdown + html + plots): {full_s:.2f} s; of {small_rows}: "
          f"{baseline:.2f} s ({ratio:.2f}x, goal <= {SCALING_GOAL:.1f}x); reading the {len(rows)} rows {read_s:.2f} s")
    assert len(rows) == CANDIDATES * (NIGHTS + 1) and small_rows == SMALL_CANDIDATES * (NIGHTS + 1)
    for heading in HEADINGS:
        assert heading in page and heading in small_pages[-1]
    assert_goal(benchmark, ratio, SCALING_GOAL)
