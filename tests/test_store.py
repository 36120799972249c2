"""The measurement store on real SQLite files."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import UsageError
from harness.cli import main
from results.schema import MEASUREMENT_COLUMNS, SCHEMA_VERSION
import results.store as results_store
from results.store import Store

UTC = dt.timezone.utc


def full_record(**overrides) -> dict:
    record = {
        "created_at": dt.datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "candidate_hash": "a" * 64,
        "candidate_name": "udc-b4-s50",
        "strategy": "udc",
        "target": "vela",
        "target_settings": {"accelerator": "ethos-u55-128", "memory_mode": "Shared_Sram"},
        "settings_key": "k1",
        "status": "ok",
        "error": None,
        "flash_bytes": 123_456,
        "sram_bytes": 65_536,
        "encoded_weight_bytes": 100_000,
        "original_weight_bytes": 400_000,
        "npu_cycles": 5_000_000_000,  # beyond 32 bits
        "total_cycles": 5_100_000_000,
        "latency_s": 0.0123,
        "latency_is_estimate": True,
        "accuracy_int8": 0.875,
        "accuracy_float": 0.9,
        "accuracy_samples": 10_000,
        "tflm_arena_bytes": 40_960,
        "rhs_bound_bytes": 90_000.5,
        "empirical_entropy_bytes": 85_000.25,
        "coded_mask_bytes": 95_000.75,
        "tool_versions": {"vela": "5.2.0", "python": "3.11.7"},
        "git_sha": "0123abcd",
        "host": "bench-host",
    }
    record.update(overrides)
    return record


@pytest.fixture
def store(tmp_path):
    s = Store.for_output_dir(tmp_path / "out")
    yield s
    s.close()


def test_round_trip_of_every_column(store, tmp_path):
    run_id = store.start_run("measure", {"target": "vela"}, {"git_sha": "0123abcd"})
    record = full_record()
    mid = store.add_measurement(run_id, record)
    rows = store.measurements()
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(MEASUREMENT_COLUMNS)
    assert row["id"] == mid and row["run_id"] == run_id
    for key, value in record.items():
        assert row[key] == value, key
    assert row["extra"] == {}
    assert isinstance(row["npu_cycles"], int) and isinstance(row["latency_is_estimate"], bool)
    assert (tmp_path / "out" / "results.sqlite").is_file()


def test_values_survive_reopening_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with Store(url) as first:
        first.add_measurement(None, full_record())
    with Store(url) as second:
        (row,) = second.measurements()
        assert row["flash_bytes"] == 123_456 and row["run_id"] is None
        assert row["created_at"] == dt.datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
        assert second.schema_version() == SCHEMA_VERSION


def test_missing_keys_are_null_and_unknown_keys_merge_into_extra(store):
    mid = store.add_measurement(None, {
        "status": "failed", "candidate_hash": "h", "error": "vela crashed",
        "layers": [{"name": "conv1", "elements": np.int64(72)}], "tflite_bytes": np.int64(2048),
        "flash_bytes": np.int64(1000), "latency_s": np.float32(0.5),
        "extra": {"note": "kept", "tflite_bytes": 1},
    })
    (row,) = store.measurements()
    assert row["id"] == mid
    assert row["extra"] == {"note": "kept", "tflite_bytes": 2048, "layers": [{"name": "conv1", "elements": 72}]}
    assert row["flash_bytes"] == 1000 and type(row["flash_bytes"]) is int
    assert row["latency_s"] == 0.5
    for key in ("candidate_name", "strategy", "target", "target_settings", "settings_key", "sram_bytes",
                "accuracy_int8", "latency_is_estimate", "tool_versions", "git_sha", "host"):
        assert row[key] is None, key
    assert row["created_at"].tzinfo is not None


def test_rejects_unknown_statuses(store):
    with pytest.raises(ValueError):
        store.add_measurement(None, {"status": "maybe"})
    run_id = store.start_run("measure", {}, {})
    with pytest.raises(ValueError):
        store.finish_run(run_id, "done")
    with pytest.raises(ValueError):
        store.finish_run(run_id + 100, "ok")
    with pytest.raises(ValueError):  # foreign key enforced on SQLite too
        store.add_measurement(run_id + 100, {"status": "ok"})
    assert store.measurements() == []


def test_find_measurement_returns_newest_ok_row_for_the_pair(store):
    assert store.find_measurement("h", "k") is None
    store.add_measurement(None, full_record(candidate_hash="h", settings_key="k", flash_bytes=1))
    newest_ok = store.add_measurement(None, full_record(candidate_hash="h", settings_key="k", flash_bytes=2))
    store.add_measurement(None, full_record(candidate_hash="h", settings_key="k", status="failed", error="boom",
                                            flash_bytes=None))
    store.add_measurement(None, full_record(candidate_hash="h", settings_key="other", flash_bytes=3))
    store.add_measurement(None, full_record(candidate_hash="g", settings_key="k", flash_bytes=4))
    found = store.find_measurement("h", "k")
    assert found["id"] == newest_ok and found["flash_bytes"] == 2
    assert set(found) == set(MEASUREMENT_COLUMNS)
    assert store.find_measurement("g", "other") is None


def test_only_failed_rows_are_no_cache_hit(store):
    store.add_measurement(None, full_record(candidate_hash="h", settings_key="k", status="failed", error="x"))
    assert store.find_measurement("h", "k") is None


def test_runs_start_finish_and_filters(store):
    first = store.start_run("measure", {"targets": ("vela",), "seed": np.int64(1)}, {"host": "h"})
    second = store.start_run("report", {}, {})
    assert store.latest_run_id() == second
    assert store.latest_run_id("measure") == first
    assert store.latest_run_id("search") is None
    (running, _) = store.runs()
    assert running["status"] == "running" and running["finished_at"] is None
    assert running["config"] == {"targets": ["vela"], "seed": 1} and running["provenance"] == {"host": socket.gethostname(),
                                                                                  "pid": os.getpid()}
    store.finish_run(first, "interrupted")
    store.finish_run(second, "ok")
    runs = store.runs()
    assert [r["id"] for r in runs] == [first, second]
    assert [r["status"] for r in runs] == ["interrupted", "ok"]
    assert all(r["finished_at"] >= r["started_at"] for r in runs)

    store.add_measurement(first, full_record(candidate_name="a"))
    store.add_measurement(second, full_record(candidate_name="b"))
    later = store.add_measurement(second, full_record(candidate_name="c",
                                                       created_at=dt.datetime(2030, 1, 1, tzinfo=UTC)))
    assert [r["candidate_name"] for r in store.measurements(run_id=second)] == ["b", "c"]
    assert [r["id"] for r in store.measurements(since=dt.datetime(2029, 1, 1, tzinfo=UTC))] == [later]
    # A naive datetime is read as UTC.
    assert [r["id"] for r in store.measurements(run_id=second, since=dt.datetime(2029, 12, 31, 23))] == [later]


def _write_rows(path: str, worker: int, count: int, barrier) -> None:
    store = Store(f"sqlite:///{path}")
    run_id = store.start_run(f"worker-{worker}", {}, {})
    barrier.wait(timeout=30)  # a crashed peer fails this worker instead of hanging it
    for i in range(count):
        store.add_measurement(run_id, {"status": "ok", "candidate_hash": f"w{worker}-{i}", "settings_key": "k",
                                       "flash_bytes": i})
        store.find_measurement(f"w{worker}-{i}", "k")  # interleave reads with the other writer
    store.finish_run(run_id, "ok")
    store.close()


def test_two_processes_writing_concurrently_lose_no_row(tmp_path):
    path = tmp_path / "shared.sqlite"  # created by whichever worker gets there first
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_rows, args=(str(path), w, 50, barrier)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
            worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    with Store(f"sqlite:///{path}") as store:
        rows = store.measurements()
        assert sorted(r["candidate_hash"] for r in rows) == sorted(f"w{w}-{i}" for w in range(2) for i in range(50))
        assert len({r["id"] for r in rows}) == 100
        assert sorted(r["status"] for r in store.runs()) == ["ok", "ok"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("content", [b"this is not a database\n" * 20, b"PK\x03\x04" + bytes(range(256)) * 8])
def test_garbage_file_raises_usage_error_and_stays_untouched(tmp_path, content):
    path = tmp_path / "results.sqlite"
    path.write_bytes(content)
    with pytest.raises(UsageError) as raised:
        Store.for_output_dir(tmp_path)
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    assert "--out" in message
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_corrupted_sqlite_file_raises_usage_error_and_stays_untouched(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(f"sqlite:///{path}") as store:
        for i in range(300):
            store.add_measurement(None, full_record(error="x" * 500, candidate_name=str(i)))
    damaged = bytearray(path.read_bytes())
    damaged[100:16384] = b"\xff" * (16384 - 100)  # keep the header, wreck the schema pages
    path.write_bytes(bytes(damaged))
    with pytest.raises(UsageError) as raised:
        Store(f"sqlite:///{path}")
    assert str(path) in str(raised.value)
    assert path.read_bytes() == bytes(damaged)


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "results.sqlite"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    connection.close()
    with pytest.raises(UsageError, match="schema 0099, newer than this harness reads"):
        Store(f"sqlite:///{path}")


# The schema exactly as the first release created it (SQLAlchemy's create_all, before migrations existed).
FIRST_RELEASE_DDL = """
CREATE TABLE meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE runs (id INTEGER NOT NULL, command VARCHAR NOT NULL, config JSON, provenance JSON,
    status VARCHAR(16) NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME, PRIMARY KEY (id));
CREATE TABLE measurements (id INTEGER NOT NULL, run_id INTEGER, created_at DATETIME NOT NULL, candidate_hash VARCHAR,
    candidate_name VARCHAR, strategy VARCHAR, target VARCHAR, target_settings JSON, settings_key VARCHAR,
    status VARCHAR(16) NOT NULL, error TEXT, flash_bytes BIGINT, sram_bytes BIGINT, encoded_weight_bytes BIGINT,
    original_weight_bytes BIGINT, npu_cycles BIGINT, total_cycles BIGINT, latency_s DOUBLE,
    latency_is_estimate BOOLEAN, accuracy_int8 DOUBLE, accuracy_float DOUBLE, accuracy_samples BIGINT,
    tflm_arena_bytes BIGINT, rhs_bound_bytes DOUBLE, empirical_entropy_bytes DOUBLE, coded_mask_bytes DOUBLE,
    tool_versions JSON, git_sha VARCHAR, host VARCHAR, extra JSON, PRIMARY KEY (id),
    FOREIGN KEY(run_id) REFERENCES runs (id));
CREATE INDEX ix_measurements_run_id ON measurements (run_id);
CREATE INDEX ix_measurements_candidate_hash ON measurements (candidate_hash);
CREATE INDEX ix_measurements_settings_key ON measurements (settings_key);
CREATE TABLE run_members (run_id INTEGER NOT NULL, measurement_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, measurement_id), FOREIGN KEY(run_id) REFERENCES runs (id),
    FOREIGN KEY(measurement_id) REFERENCES measurements (id));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO runs VALUES (1, 'run', '{}', '{}', 'ok', '2025-01-01 00:00:00', '2025-01-01 00:10:00');
INSERT INTO measurements (id, run_id, created_at, candidate_hash, candidate_name, target, status, flash_bytes, extra)
    VALUES (1, 1, '2025-01-01 00:05:00', 'aaaa', 'udc-b4-s50', 'vela', 'ok', 48624, '{"search": {"budget_bytes": 24000}}');
"""


def schema_differences(url: str) -> list:
    """What Alembic's autogenerate would change to make the store match the models (nothing, when in step)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from results.schema import Base

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_the_migrations_end_at_the_revision_the_code_reads(tmp_path):
    from alembic.script import ScriptDirectory

    from results.schema import SCHEMA_REVISION

    script = ScriptDirectory(str(Path(results_store.__file__).with_name("migrations")))
    assert script.get_current_head() == SCHEMA_REVISION
    Store(f"sqlite:///{tmp_path / 'fresh.sqlite'}").close()
    assert schema_differences(f"sqlite:///{tmp_path / 'fresh.sqlite'}") == []


def test_an_old_store_gets_one_message_and_upgrades_keeping_every_row(tmp_path, capsys):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(FIRST_RELEASE_DDL)
    connection.close()
    assert main(["report", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "schema 0001" in message
    assert f"'python -m harness store upgrade --out {tmp_path}'" in message
    assert main(["store", "status", "--out", str(tmp_path)]) == 1
    status = capsys.readouterr().out
    assert "schema 0001, older than this harness's 0002" in status and "store upgrade --out" in status
    with sqlite3.connect(path) as connection:  # refusing and reporting migrated nothing
        assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall() == []
    connection.close()
    assert main(["store", "upgrade", "--out", str(tmp_path)]) == 0
    assert "schema 0001 -> 0002" in capsys.readouterr().out
    assert (tmp_path / "results.sqlite.schema-0001.bak").read_bytes()[:16] == b"SQLite format 3\x00"
    assert schema_differences(f"sqlite:///{path}") == []
    with Store.for_output_dir(tmp_path) as store:
        (row,) = store.measurements(since=dt.datetime(2024, 12, 31))
        assert row["flash_bytes"] == 48624 and row["extra"]["search"]["budget_bytes"] == 24000
        assert store.schema_version() == SCHEMA_VERSION and store.runs()[0]["status"] == "ok"
    assert main(["store", "upgrade", "--out", str(tmp_path)]) == 0  # upgrading a current store changes nothing
    assert "current; 1 runs" in capsys.readouterr().out
    empty = tmp_path / "empty"
    assert main(["store", "status", "--out", str(empty)]) == 2
    assert "no store in" in capsys.readouterr().err and not (empty / "results.sqlite").exists()


def test_a_store_without_a_schema_version_is_named_unreadable(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
    connection.close()
    with pytest.raises(UsageError, match="not a readable results store .tables without a schema version."):
        Store.for_output_dir(tmp_path)


KILLED_WRITER = """
import sys
from results.store import Store
store = Store(sys.argv[1])
run = store.start_run("run", {}, {})
index = 0
while True:
    store.add_measurement(run, {"status": "ok", "candidate_hash": f"c{index}", "settings_key": "k",
                                "flash_bytes": index, "extra": {"layers": list(range(200))}})
    print(index, flush=True)
    index += 1
"""


def test_a_run_killed_midway_leaves_a_consistent_resumable_store(tmp_path):
    path = tmp_path / "results.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, f"sqlite:///{path}"], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[1])
    try:
        for _ in range(30):  # 30 rows committed, the 31st likely under way
            assert writer.stdout.readline(), "the writer died before it was killed"
    finally:
        writer.kill()
        writer.wait(30)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store(f"sqlite:///{path}") as store:
        rows = store.measurements()
        assert len(rows) >= 30
        assert all(row["flash_bytes"] == int(row["candidate_hash"][1:]) and row["extra"]["layers"][-1] == 199
                   for row in rows)  # no half-written row
        (run,) = store.runs()
        assert run["status"] == "running" and run["finished_at"] is None
        # Resuming: every committed measurement is a cache hit, and the store takes new runs; starting one
        # marks the dead process's run interrupted.
        assert all(store.find_measurement(f"c{i}", "k") is not None for i in range(30))
        again = store.start_run("run", {}, {})
        assert [r["status"] for r in store.runs()] == ["interrupted", "running"]
        store.add_measurement(again, {"status": "ok", "candidate_hash": "c-next", "settings_key": "k"})
        store.finish_run(again, "ok")


def test_bad_urls_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        Store("results.sqlite")
    with pytest.raises(UsageError, match="does not exist"):
        Store(f"sqlite:///{tmp_path / 'missing-dir' / 'results.sqlite'}")


def test_in_memory_store_works():
    with Store("sqlite://") as store:
        run_id = store.start_run("measure", {}, {})
        store.add_measurement(run_id, full_record())
        assert store.find_measurement("a" * 64, "k1")["run_id"] == run_id


def test_a_run_lists_the_cache_hits_it_linked(store):
    first_run = store.start_run("run", {}, {})
    measured = store.add_measurement(first_run, {"status": "ok", "candidate_hash": "a", "settings_key": "k"})
    second_run = store.start_run("run", {}, {})
    fresh = store.add_measurement(second_run, {"status": "ok", "candidate_hash": "b", "settings_key": "k"})
    store.link(second_run, measured)
    store.link(second_run, measured)
    store.link(second_run, fresh)
    assert [row["id"] for row in store.measurements(second_run)] == [measured, fresh]
    assert [row["id"] for row in store.measurements(first_run)] == [measured]
    assert len(store.measurements()) == 2
