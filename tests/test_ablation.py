"""The UDC paper's Table 3 rows as search settings, and the ablation run through `harness run`."""

import pytest

from harness.cli import main
from results.store import Store
from search.settings import UDC_QUICK
from search.strategy.ablation import TABLE3_ROWS, row_components, row_settings
from tests.test_run import TINY_SEARCH, _config


def test_rows_follow_the_papers_table():
    assert list(TABLE3_ROWS) == ["vanilla-dnas", "rejection-mc", "mc-projection", "projection", "mc",
                                 "rejection-mc-lambda", "mc-lambda", "full-udc"]
    full, vanilla = row_settings("full-udc", UDC_QUICK)
    assert full == UDC_QUICK and not vanilla  # full UDC is the configured search itself
    settings, vanilla = row_settings("vanilla-dnas", UDC_QUICK)
    assert vanilla and settings["samples"] == 1 and not settings["projection"] and not settings["rejection"]
    weight = UDC_QUICK["size_weight"]
    assert settings["lambda_sweep"] == [weight / 10, weight, weight * 10]
    settings, vanilla = row_settings("projection", UDC_QUICK)
    assert (settings["samples"], settings["projection"], settings["rejection"], settings["lambda_sweep"]) == (
        1, True, False, [])
    settings, _ = row_settings("rejection-mc", UDC_QUICK)
    assert settings["samples"] == UDC_QUICK["samples"] > 1 and settings["rejection"] and not settings["projection"]
    assert row_components("mc-lambda") == {"rejection": False, "mc_samples": True, "projection": False,
                                           "lambda_tuning": True}


@pytest.mark.slow
def test_ablation_run_records_every_row(tmp_path):
    out = tmp_path / "out"
    config = _config(tmp_path, TINY_SEARCH.replace("\"random\"", "\"uniform\""))
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet", "--ablation", "table3"]) == 0
    with Store.for_output_dir(out) as store:
        rows = store.measurements(store.latest_run_id())
    by_row = {r["extra"]["search"]["ablation"]["row"]: r for r in rows if "ablation" in r["extra"].get("search", {})}
    assert set(by_row) == set(TABLE3_ROWS)  # beside 4 uniform candidates and the plain udc search
    assert len(rows) == len(TABLE3_ROWS) + 5
    assert by_row["vanilla-dnas"]["strategy"] == "dnas"
    assert len(by_row["mc-lambda"]["extra"]["search"]["lambda_sweep"]) == 3
    assert "lambda_sweep" not in by_row["full-udc"]["extra"]["search"]
    assert "Ablation (the UDC paper's Table 3)" in (out / "reports" / "run-1" / "report.md").read_text()
