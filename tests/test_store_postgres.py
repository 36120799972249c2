"""The store on a real PostgreSQL server (the shared store of a board farm): same schema and behaviour
as on SQLite, concurrent writers from several processes, and the CLI with --store URL."""

import json
import multiprocessing
import uuid

import pytest

from harness.cli import main
from results.store import Store
from tests.postgres import PostgresServer


@pytest.fixture(scope="module")
def server():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def url(server):
    return server.create_database(f"store_{uuid.uuid4().hex[:8]}")


def _record(name, flash, **extra):
    return {"status": "ok", "candidate_name": name, "candidate_hash": name * 8, "target": "vela",
            "settings_key": "k", "flash_bytes": flash, "accuracy_int8": 0.875, "tool_versions": {"vela": "5.2.0"},
            "extra": {"layers": [{"name": "stem", "bits": 4}]}, **extra}


def test_runs_and_measurements_round_trip(url):
    with Store(url) as store:
        run = store.start_run("run", {"budgets": ["24KB"]}, {"git_sha": "abc"})
        first = store.add_measurement(run, _record("a", 48624, unknown_key=[1, 2]))
        store.finish_run(run, "ok")
        other = store.start_run("run", {}, {})
        store.link(other, first)  # a cache hit listed by a later run
        store.finish_run(other, "ok")
    with Store(url) as store:  # a second connection sees the schema and the rows
        assert store.schema_version() == 1 and store.latest_run_id() == other
        row = store.measurements(other)[0]
        assert row["flash_bytes"] == 48624 and row["accuracy_int8"] == 0.875
        assert row["extra"]["layers"] == [{"name": "stem", "bits": 4}] and row["extra"]["unknown_key"] == [1, 2]
        assert store.find_measurement("a" * 8, "k")["id"] == first
        assert [r["status"] for r in store.runs()] == ["ok", "ok"]


def _write_rows(url, worker, count):
    with Store(url) as store:
        run = store.start_run("measure", {"worker": worker}, {})
        for index in range(count):
            store.add_measurement(run, _record(f"w{worker}-{index}", index))
        store.finish_run(run, "ok")


def test_two_writer_processes_lose_no_row(url):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_rows, args=(url, worker, 40)) for worker in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    with Store(url) as store:
        names = [row["candidate_name"] for row in store.measurements()]
    assert len(names) == 80 and len(set(names)) == 80


def test_measure_and_report_against_a_postgresql_url(url, capsys, tmp_path, hand_tflite_file):
    assert main(["measure", "--tflite", str(hand_tflite_file), "--store", url, "--out", str(tmp_path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["flash_bytes"] > 0
    assert main(["report", "--store", url, "--out", str(tmp_path)]) == 0
    with Store(url) as store:
        assert store.measurements()[0]["flash_bytes"] == record["flash_bytes"]
