"""The main job end to end: train, compress, measure, store, report, and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from results.store import Store

TINY = """
[run]
dataset = "synthetic"
strategies = ["uniform"]
[search]
bits = [8, 2]
nonzero = [1.0, 0.5]
pretrain_epochs = 1
finetune_steps = 6
batch_size = 64
[measure]
eval_samples = 64
calibration_samples = 32
"""


def _config(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_run_makes_measures_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    config = _config(tmp_path)
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        rows = store.measurements(store.latest_run_id())
    assert sorted(r["candidate_name"] for r in rows) == sorted(
        f"uniform-mbv2-b{b}-s{s}" for b in (8, 2) for s in (100, 50))
    for row in rows:
        assert row["status"] == "ok" and row["flash_bytes"] > 0 and row["accuracy_samples"] == 64
        assert row["tool_versions"]["vela"] and row["git_sha"] and row["host"]
        assert row["extra"]["layers"], "per-layer size figures are kept"
    smaller = {r["candidate_name"]: r for r in rows}
    assert smaller["uniform-mbv2-b2-s50"]["flash_bytes"] < smaller["uniform-mbv2-b8-s100"]["flash_bytes"]
    assert smaller["uniform-mbv2-b2-s50"]["rhs_bound_bytes"] < smaller["uniform-mbv2-b8-s100"]["rhs_bound_bytes"]
    report = out / "reports" / "run-1" / "report.md"
    assert "uniform-mbv2-b8-s100" in report.read_text()
    assert (report.parent / "accuracy_vs_flash.png").stat().st_size > 1000

    # Again: nothing is trained or measured, every row is the same cache hit, the new run lists them all.
    pretrained = next((out / "cache").glob("pretrain-*.pt"))
    mtime = pretrained.stat().st_mtime_ns
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        assert len(store.measurements()) == 4
        assert [r["id"] for r in store.measurements(2)] == [r["id"] for r in rows]
    assert pretrained.stat().st_mtime_ns == mtime

    # A wider sweep reuses the four candidates and measures only the new ones.
    wider = TINY.replace("bits = [8, 2]", "bits = [8, 4, 2]")
    assert main(["run", "--config", str(_config(tmp_path, wider)), "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        assert len(store.measurements()) == 6


TINY_UDC = """
[udc]
pretrain_epochs = 1.0
pretrain_batch_size = 32
warmup_steps = 16
search_steps = 96
batch_size = 16
finetune_steps = 32
finetune_batch_size = 32
"""
TINY_SEARCH = (TINY.replace('strategies = ["uniform"]', 'strategies = ["udc", "random"]\nbudgets = ["size_bound=30KB"]')
               + TINY_UDC + "random_trials = 2\nvalidation_images = 128\n")


def test_run_searches_each_budget_and_records_the_verdict(tmp_path, capsys):
    out = tmp_path / "out"
    config = _config(tmp_path, TINY_SEARCH)
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        rows = {r["candidate_name"]: r for r in store.measurements(store.latest_run_id())}
    assert set(rows) == {"udc-mbv2-30kB", "random-mbv2-30kB"}
    for row in rows.values():
        search = row["extra"]["search"]
        assert row["status"] == "ok" and search["budget_bytes"] == 30000
        # the verdict is the size bound the measurement reads off the deployed weights
        assert search["size_bits"] / 8 == pytest.approx(row["rhs_bound_bytes"], rel=1e-9)
        assert search["constraint_met"] == (row["rhs_bound_bytes"] <= 30000)
        assert search["decisions"]["stem"]["bits"] in (8, 6, 4, 3, 2)
        assert "pretrain_s" not in search["timings_s"]  # the searches start from the one cached pretraining
        assert search["weight_norm"]["trajectory_qhat"] and search["weight_norm"]["trajectory_plain"]
        # a configuration grown to just under the budget can land a little over it once finetuning has
        # quantized some weights of its dense layers to zero
        assert row["rhs_bound_bytes"] <= 30000 * 1.01
    assert rows["udc-mbv2-30kB"]["extra"]["search"]["constraint_met"] is True  # its repair left room
    assert len(list((out / "cache").glob("pretrain-udc-*.pt"))) == 1  # one pretraining serves both searches
    assert "udc-mbv2-30kB" in (out / "reports" / "run-1" / "report.md").read_text()
    # A bigger budget searches only that one; the 30KB candidates are cache hits.
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet", "--budgets", "size_bound=30KB", "size_bound=40KB",
                 "--strategies", "udc"]) == 0
    with Store.for_output_dir(out) as store:
        assert sorted(r["candidate_name"] for r in store.measurements(store.latest_run_id())) == [
            "udc-mbv2-30kB", "udc-mbv2-40kB"]
        assert len(store.measurements()) == 3


@pytest.mark.parametrize("flags,message", [
    (["--budgets", "size_bound=100"], "below the smallest configuration"),
    (["--budgets", "24KB", "lots"], "budget 'lots' is not a positive size"),
    (["--budgets", "24KB,32KB"], "budget '24KB,32KB' names flash twice"),
    (["--seeds", "0"], "run.seeds = 0: give at least 1 seed"),
    (["--strategies", "udc,evolution"], "unknown strategy 'evolution' in run.strategies"),
])
def test_run_refuses_bad_searches_before_training(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["run", "--config", str(_config(tmp_path, TINY_SEARCH)), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "cache").exists()


def test_run_without_dataset_names_the_fix(tmp_path, capsys):
    config = _config(tmp_path, TINY.replace('dataset = "synthetic"', 'dataset = "fashion-mnist"\ndata_path = "/nowhere"'))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def _wait_for_store(process: subprocess.Popen, out: Path, ready, within_s: float = 300) -> None:
    """Poll the store a running ``harness run`` writes until ``ready(store)``, it exits, or time runs out."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "results.sqlite").exists():
            with Store.for_output_dir(out) as store:
                if ready(store):
                    return
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_candidates(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness", "run", "--config", str(_config(tmp_path)), "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_store(process, out, lambda store: len(store.measurements()) >= 1)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    with Store.for_output_dir(out) as store:
        measured_before = {r["candidate_hash"] for r in store.measurements()}
    assert 1 <= len(measured_before) < 4
    result = subprocess.run(command[:-1] + ["--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    with Store.for_output_dir(out) as store:
        rows = store.measurements(store.latest_run_id())
        assert len(rows) == 4
        assert len(store.measurements()) == 4  # the killed run's rows were reused, not measured again
        assert measured_before <= {r["candidate_hash"] for r in rows}
        # The killed process cannot record its end; the next run on this host marks it interrupted.
        assert [run["status"] for run in store.runs()] == ["interrupted", "ok"]


def test_sigterm_stops_a_run_as_interrupted(tmp_path):
    """What a cron timeout or a cancelled CI job does: the run ends interrupted, exit 130, rows kept."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness", "run", "--config", str(_config(tmp_path)), "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_store(process, out, lambda store: bool(store.runs()))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted: measurements so far are stored" in stderr
    with Store.for_output_dir(out) as store:
        (run,) = store.runs()
        assert run["status"] == "interrupted" and run["finished_at"] is not None


@pytest.mark.slow
def test_quick_main_job_on_fashion_mnist(tmp_path):
    """The README's main job: nine candidates on real Fashion-MNIST with real numbers."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    assert main(["run", "--quick", "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        rows = store.measurements(store.latest_run_id())
    assert len(rows) == 11 and all(r["status"] == "ok" for r in rows)
    by_name = {r["candidate_name"]: r for r in rows}
    assert by_name["udc-mbv2-24kB"]["extra"]["search"]["constraint_met"]
    # the verdict is the size bound of the deployed weights: a random draw grown to just under the budget can
    # miss it by the weights its dense 3-4-bit layers quantize to zero, which is recorded, not hidden
    random = by_name["random-mbv2-24kB"]
    assert random["extra"]["search"]["constraint_met"] == (random["rhs_bound_bytes"] <= 24000)
    assert random["rhs_bound_bytes"] <= 24000 * 1.01
    assert by_name["uniform-mbv2-b8-s100"]["accuracy_int8"] > 0.8
    assert json.dumps(rows, default=str)
