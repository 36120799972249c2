"""One row per measurement: processes measuring the same model under the same settings at the same time
store one row; the others wait for it and report a cache hit (results.locks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from results.store import Store
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


def _four_at_once(model: Path, out: Path, store: str | None = None) -> list[dict]:
    command = [sys.executable, "-m", "harness", "measure", "--tflite", str(model), "--target", "vela", "--json",
               "--out", str(out)] + (["--store", store] if store else [])
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(4)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


def _check(rows: list[dict], stored: list[dict]) -> None:
    assert len(stored) == 1 and stored[0]["status"] == "ok"
    assert sorted(row["cached"] for row in rows) == [False, True, True, True]
    assert {row["candidate_hash"] for row in rows} == {stored[0]["candidate_hash"]}


def test_four_processes_one_row_sqlite(hand_tflite_file, tmp_path):
    rows = _four_at_once(hand_tflite_file, tmp_path)
    with Store.for_output_dir(tmp_path) as store:
        _check(rows, store.measurements())


def test_four_processes_one_row_postgresql(hand_tflite_file, tmp_path):
    server = PostgresServer()
    try:
        url = server.create_database("one_row")
        rows = _four_at_once(hand_tflite_file, tmp_path, url)
        with Store(url) as store:
            _check(rows, store.measurements())
    finally:
        server.stop()


@pytest.mark.slow
def test_farm_given_one_candidate_four_times_stores_one_row(tmp_path, capsys):
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed")
    from harness.cli import main
    from tests.candidates import make_candidate

    server = PostgresServer()
    try:
        url = server.create_database("farm_once")
        candidate = make_candidate().save(tmp_path / "c")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, resources={"vela": 2},
                                      dashboard_address=None) as cluster:
            arguments = ["farm", "--scheduler", cluster.scheduler_address, "--store", url, "--out",
                         str(tmp_path / "out"), "--target", "vela"] + ["--candidate", str(candidate)] * 4
            assert main(arguments) == 0
        err = capsys.readouterr().err
        with Store(url) as store:
            assert len(store.measurements()) == 1
        assert err.count(": ok on ") == 4 and err.count("(cached)") == 3
    finally:
        server.stop()
