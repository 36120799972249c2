"""The store on a real PostgreSQL server (the shared store of a board farm): same schema and behaviour
as on SQLite, concurrent writers from several processes, and the CLI with --store URL."""

import json
import multiprocessing
import uuid

import pytest

from harness.cli import main
from results.schema import SCHEMA_VERSION
from results.store import Store
from tests.postgres import PostgresServer
from tests.test_store import schema_differences


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
        assert store.schema_version() == SCHEMA_VERSION and store.latest_run_id() == other
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


def test_an_old_store_on_postgresql_upgrades_keeping_its_rows(url, capsys):
    from sqlalchemy import create_engine

    from results.store import _migrate

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:  # what the first release left: revision 0001's tables, no Alembic stamp
        _migrate(connection)
        connection.exec_driver_sql("DROP INDEX ix_measurements_created_at; DROP INDEX ix_measurements_candidate_name;"
                                   "UPDATE meta SET value = '1'; DROP TABLE alembic_version")
        connection.exec_driver_sql("INSERT INTO measurements (created_at, status, candidate_name, flash_bytes) "
                                   "VALUES (now(), 'ok', 'kept', 1234)")
    engine.dispose()
    assert main(["report", "--all", "--store", url]) == 2
    command = capsys.readouterr().err.split("'python -m harness ")[1].split("'")[0].split()
    assert command[:3] == ["store", "upgrade", "--store"]
    assert main(command) == 0  # the command the message names, as printed
    assert "schema 0001 -> 0002" in capsys.readouterr().out
    assert schema_differences(url.replace("postgresql://", "postgresql+psycopg://")) == []
    with Store(url) as store:
        assert [(r["candidate_name"], r["flash_bytes"]) for r in store.measurements()] == [("kept", 1234)]
