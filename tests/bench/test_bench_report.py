"""`report` on 1,000 stored measurements: seconds, as a ratio against reading those rows from the store
(the work any report must do) in the same run. The rows have what a nightly store holds: 200 candidates
measured on vela over four nights and once on corstone300, searched ones with per-layer decisions, so every
section (fronts per strategy, decisions, estimate vs measurement, history) is drawn."""

import datetime as dt
import time

import numpy as np

from results.report import write_html, write_report
from results.store import Store

CANDIDATES, NIGHTS = 200, 4
LAYERS = [f"b{i}_{part}" for i in range(8) for part in ("expand", "project")] + ["fc"]


def _records(rng):
    for index in range(CANDIDATES):
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


def test_report_of_a_thousand_measurements(benchmark, tmp_path):
    with Store.for_output_dir(tmp_path) as store:
        run = store.start_run("run", {}, {})
        for record in _records(np.random.default_rng(0)):
            store.add_measurement(run, record)
        started = time.perf_counter()
        rows = store.measurements(run)
        baseline = time.perf_counter() - started

        def report():
            return write_html(write_report(store.measurements(run), tmp_path / "report"))

        page = benchmark.pedantic(report, rounds=3, iterations=1).read_text()
    ratio = benchmark.stats.stats.median / baseline
    benchmark.extra_info.update(rows=len(rows), read_rows_s=baseline, report_s=benchmark.stats.stats.median, ratio=ratio)
    print(f"\nreport of {len(rows)} measurements (markdown + html + plots): {benchmark.stats.stats.median:.2f} s; "
          f"reading them {baseline:.2f} s ({ratio:.1f}x)")
    assert len(rows) == CANDIDATES * (NIGHTS + 1)
    for heading in ("Pareto front per strategy", "Per-layer decisions", "Estimate vs measurement", "History"):
        assert heading in page
    assert benchmark.stats.stats.median < 10
