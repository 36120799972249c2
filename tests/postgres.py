"""A throwaway PostgreSQL server for tests: its own cluster in a temporary directory, reached over a
unix socket there, removed afterwards. Skips (with the reason) where PostgreSQL is not installed."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self):
        binaries = _server_binaries()
        if binaries is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql); shared-store tests skipped")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg is not installed (pip install 'psycopg[binary]'); shared-store tests skipped")
        self.binaries, self.port = binaries, _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        # PostgreSQL refuses to run as root: run it as the postgres user the Debian package creates.
        self.user_prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.user_prefix:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.directory / "data"), "-U", "harness", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-w", "-l", str(self.directory / "log"), "-o",
                  f"-p {self.port} -k {self.directory} -c listen_addresses=''", "start")

    def _run(self, tool: str, *arguments: str) -> None:
        subprocess.run([*self.user_prefix, str(self.binaries / tool), *arguments], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://harness@/{database}?host={self.directory}&port={self.port}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host=str(self.directory), port=self.port, user="harness", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.user_prefix, str(self.binaries / "pg_ctl"), "-D", str(self.directory / "data"), "-m",
                        "immediate", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)
