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


def test_run_without_dataset_names_the_fix(tmp_path, capsys):
    config = _config(tmp_path, TINY.replace('dataset = "synthetic"', 'dataset = "fashion-mnist"\ndata_path = "/nowhere"'))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_candidates(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness", "run", "--config", str(_config(tmp_path)), "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if (out / "results.sqlite").exists():
                with Store.for_output_dir(out) as store:
                    if len(store.measurements()) >= 1:
                        break
            time.sleep(0.5)
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


@pytest.mark.slow
def test_quick_main_job_on_fashion_mnist(tmp_path):
    """The README's main job: nine candidates on real Fashion-MNIST with real numbers."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    assert main(["run", "--quick", "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        rows = store.measurements(store.latest_run_id())
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    by_name = {r["candidate_name"]: r for r in rows}
    assert by_name["uniform-mbv2-b8-s100"]["accuracy_int8"] > 0.8
    assert json.dumps(rows, default=str)
