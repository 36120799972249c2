"""`report` on 1,000 stored measurements: seconds, as a ratio against reading those rows from the store
(the work any report must do) in the same run."""

import time

import numpy as np

from results.report import write_html, write_report
from results.store import Store

ROWS = 1000


def test_report_of_a_thousand_measurements(benchmark, tmp_path):
    rng = np.random.default_rng(0)
    with Store.for_output_dir(tmp_path) as store:
        run = store.start_run("run", {}, {})
        for index in range(ROWS):
            budget = 24000 if index % 3 else None
            store.add_measurement(run, {
                "status": "ok", "candidate_name": f"c{index}", "candidate_hash": f"{index:064d}", "target": "vela",
                "strategy": ["uniform", "udc", "random", "zur"][index % 4], "flash_bytes": int(rng.integers(20e3, 100e3)),
                "accuracy_int8": float(rng.uniform(0.5, 0.9)), "rhs_bound_bytes": float(rng.uniform(10e3, 80e3)),
                "empirical_entropy_bytes": float(rng.uniform(10e3, 80e3)), "coded_mask_bytes": float(rng.uniform(10e3, 80e3)),
                "encoded_weight_bytes": int(rng.integers(10e3, 80e3)), "latency_s": 1e-4, "npu_cycles": 80000,
                "extra": {"search": {"budget_bytes": budget, "size_bits": 8 * 23000.0, "constraint_met": True}}
                if budget else {}})
        started = time.perf_counter()
        rows = store.measurements(run)
        baseline = time.perf_counter() - started

        def report():
            return write_html(write_report(store.measurements(run), tmp_path / "report"))

        benchmark.pedantic(report, rounds=3, iterations=1)
    ratio = benchmark.stats.stats.median / baseline
    benchmark.extra_info.update(rows=len(rows), read_rows_s=baseline, report_s=benchmark.stats.stats.median, ratio=ratio)
    print(f"\nreport of {len(rows)} measurements (markdown + html + plots): {benchmark.stats.stats.median:.2f} s; "
          f"reading them {baseline:.2f} s ({ratio:.1f}x)")
    assert len(rows) == ROWS and benchmark.stats.stats.median < 10
