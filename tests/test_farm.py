"""The board farm: two Dask worker processes on this machine, one scheduler, one shared PostgreSQL
store; every candidate is measured exactly once, and submitting again measures nothing."""

import pytest

from harness.cli import main
from results.store import Store
from tests.candidates import make_candidate
from tests.postgres import PostgresServer

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install distributed)")


def test_two_workers_measure_every_candidate_exactly_once(tmp_path, capsys):
    server = PostgresServer()
    try:
        url = server.create_database("farm")
        candidates = tmp_path / "candidates"
        for index, (bits, nonzero) in enumerate([(8, 1.0), (4, 0.5), (2, 0.2), (4, 0.2), (8, 0.5)]):
            make_candidate(bits=bits, nonzero=nonzero, seed=index).save(candidates / f"c{index}")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"vela": 1},
                                      dashboard_address=None) as cluster:
            arguments = ["farm", "--scheduler", cluster.scheduler_address, "--candidate", str(candidates),
                         "--store", url, "--out", str(tmp_path / "out"), "--target", "vela"]
            assert main(arguments) == 0
            first = capsys.readouterr().err
            assert main(arguments) == 0  # again: every candidate is a cache hit in the shared store
            second = capsys.readouterr().err
        with Store(url) as store:
            rows = store.measurements()
        assert len(rows) == 5 and len({r["candidate_hash"] for r in rows}) == 5
        assert all(r["status"] == "ok" and r["flash_bytes"] > 0 for r in rows)
        assert first.count(": ok on ") == 5 and second.count("(cached)") == 5
    finally:
        server.stop()


def test_farm_needs_a_shared_store_and_candidates(tmp_path, capsys):
    assert main(["farm", "--scheduler", "tcp://127.0.0.1:1", "--candidate", str(tmp_path)]) == 2
    assert "pass --store postgresql://" in capsys.readouterr().err
    assert main(["farm", "--scheduler", "tcp://127.0.0.1:1", "--store", "sqlite:///x", "--candidate",
                 str(tmp_path / "none")]) == 2
    assert "not a candidate directory" in capsys.readouterr().err
