"""The measurement store: runs and measurements in any SQLAlchemy database (SQLite file by default).

One row per measured (candidate, target settings) pair; ``find_measurement`` makes that pair a cache key,
so an unchanged candidate is not measured again. Record dicts use the column names below; keys the schema
does not know go into the ``extra`` JSON column so nothing a stage reports is lost.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker

from core.errors import HarnessError, UsageError
from results.locks import measurement_lock
from results.records import ASSIGNED, coerce, jsonable, measurement_dict, row_dict
from results.schema import (BUSY_TIMEOUT_MS, MEASUREMENT_COLUMNS, MEASUREMENT_STATUSES, RUN_COLUMNS, RUN_STATUSES,
                            SCHEMA_REVISION, SCHEMA_REVISIONS, SQLITE_MAGIC, STORE_FILENAME, Base, Meta,
                            Measurement, Run, RunMember, utcnow)


def _migrate(connection, stamp: str | None = None) -> None:
    """Alembic upgrade to the newest revision on ``connection``, inside the caller's transaction; ``stamp``
    first records the revision of a store made before migrations."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    if stamp is not None:
        command.stamp(config, stamp)
    command.upgrade(config, "head")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class Store:
    """Runs and measurements in one database; safe for several processes writing to one SQLite file."""

    def __init__(self, url: str, upgrade: bool = False, status_only: bool = False):
        """Open (or create) the store at ``url``. An older schema is refused with the command that upgrades
        it; ``upgrade=True`` is that command: it migrates the store (an SQLite file is backed up first).
        ``status_only`` opens an older store untouched, only to read ``revision`` (``store status``)."""
        self.upgraded_from: str | None = None
        self.revision: str | None = None
        self._status_only = status_only
        self.backup: Path | None = None
        try:
            parsed = make_url(url)
        except exc.ArgumentError as error:
            raise UsageError(f"{url!r} is not a database URL; pass one like sqlite:///path/results.sqlite") from error
        if parsed.drivername == "postgresql":  # psycopg 3, not SQLAlchemy's default psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        self._label = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        if self._sqlite and parsed.database not in (None, "", ":memory:") and not parsed.database.startswith("file:"):
            self._label = parsed.database
            self._check_sqlite_file(Path(parsed.database))
        try:
            self.engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000} if self._sqlite else {})
        except (ImportError, exc.NoSuchModuleError) as error:
            raise UsageError(f"cannot open {self._label}: {error}; install the database driver or use a sqlite:/// URL") \
                from error
        if self._sqlite:
            self._install_sqlite_hooks(self.engine)
        # Writes take SQLite's write lock up front: a deferred transaction that read first cannot wait
        # for the lock (SQLITE_BUSY without retry) once another process has committed.
        self._write_engine = self.engine.execution_options(sqlite_immediate=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            self._prepare_schema(upgrade)
        except exc.DatabaseError as error:
            self.engine.dispose()
            reason = str(error.orig or error).splitlines()[0]
            if "locked" in reason or "busy" in reason:
                raise HarnessError(f"{self._label} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s; "
                                   f"retry when that process finishes") from error
            raise UsageError(self._unreadable(reason)) from error
        except UsageError:
            self.engine.dispose()
            raise

    @classmethod
    def for_output_dir(cls, out_dir) -> "Store":
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create output directory {out}: {error.strerror}; pass --out to a writable "
                             f"directory") from error
        return cls(f"sqlite:///{(out / STORE_FILENAME).resolve()}")

    # -- setup ---------------------------------------------------------------------------------------------

    def _unreadable(self, reason: str) -> str:
        return (f"{self._label} is not a readable results store ({reason}); "
                f"move it away or pass --out to a fresh directory")

    def _check_sqlite_file(self, path: Path) -> None:
        """Refuse anything but an SQLite file before SQLite gets a chance to write to it."""
        if not path.exists():
            if not path.parent.is_dir():
                raise UsageError(f"{path}: directory {path.parent} does not exist; create it or pass --out "
                                 f"to an existing directory")
            return
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(SQLITE_MAGIC))
        except OSError as error:
            raise UsageError(self._unreadable(error.strerror or type(error).__name__)) from error
        if header and header != SQLITE_MAGIC:  # an empty file is a new database to SQLite
            raise UsageError(self._unreadable("not an SQLite database"))

    @staticmethod
    def _install_sqlite_hooks(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            # SQLAlchemy emits BEGIN itself (below); the driver's own implicit BEGIN would defeat IMMEDIATE.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA foreign_keys = ON")
                # WAL: readers never block the writer, and a second process's commit waits instead of failing.
                cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection):
            immediate = connection.get_execution_options().get("sqlite_immediate")
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def upgrade_command(self) -> str:
        if self._sqlite and Path(self.url.database or "").name == STORE_FILENAME:
            return f"python -m harness store upgrade --out {Path(self.url.database).parent}"
        url = f"sqlite:///{self.url.database}" if self._sqlite else self._label
        return f"python -m harness store upgrade --store {url}"

    def _prepare_schema(self, upgrade: bool) -> None:
        """A fresh store gets every migration; an existing one must be at ``SCHEMA_REVISION``, or is migrated
        to it when ``upgrade`` is set. One transaction under a lock, so hosts starting together do not race."""
        with self._write_engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
            revision, stamped = self._revision(connection)
            self.revision = revision or SCHEMA_REVISION
            if revision is None:
                _migrate(connection)
                return
            if revision == SCHEMA_REVISION:
                self._check_columns(connection)
                return
            if revision not in SCHEMA_REVISIONS:
                raise UsageError(f"{self._label} has results schema {revision}, newer than this harness reads "
                                 f"({SCHEMA_REVISION}); upgrade the harness, or pass --out to a fresh directory")
            if self._status_only:
                return
            if not upgrade:
                raise UsageError(f"{self._label} has results schema {revision}, this harness needs {SCHEMA_REVISION}; "
                                 f"upgrade the store with '{self.upgrade_command()}' (keeps every row)")
            if self._sqlite and self.url.database not in (None, "", ":memory:"):
                self.backup = self._backup_sqlite(Path(self.url.database), revision)
            _migrate(connection, stamp=None if stamped else revision)
            self.upgraded_from, self.revision = revision, SCHEMA_REVISION

    def _revision(self, connection) -> tuple[str | None, bool]:
        """(the store's schema revision or None when empty, whether Alembic has stamped it)."""
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" in tables:
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            if revision is None:
                raise UsageError(self._unreadable("its alembic_version table is empty"))
            return revision, True
        if not tables & {"meta", "runs", "measurements", "run_members"}:
            return None, False
        if "meta" not in tables:
            raise UsageError(self._unreadable("tables without a schema version"))
        value = connection.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
        if value is None or not value.isdigit():
            raise UsageError(self._unreadable(f"schema version {value!r}"))
        # Stores from before migrations carry only this number; version N is revision 000N.
        return f"{int(value):04d}", False

    def _check_columns(self, connection) -> None:
        existing = set(inspect(connection).get_table_names())
        for table in Base.metadata.sorted_tables:
            if table.name not in existing:
                raise UsageError(self._unreadable(f"table {table.name} is missing"))
            have = {column["name"] for column in inspect(connection).get_columns(table.name)}
            missing = sorted(set(table.columns.keys()) - have)
            if missing:
                raise UsageError(self._unreadable(f"table {table.name} lacks columns {', '.join(missing)}"))

    @staticmethod
    def _backup_sqlite(path: Path, revision: str) -> Path:
        """A consistent copy (SQLite's backup API, safe beside WAL readers) before any migration touches it."""
        import sqlite3

        backup = path.with_name(f"{path.name}.schema-{revision}.bak")
        source, target = sqlite3.connect(path), sqlite3.connect(backup)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return backup

    # -- runs ------------------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._read() as session:
            meta = session.get(Meta, "schema_version")
            return int(meta.value)

    def start_run(self, command: str, config: dict, provenance: dict) -> int:
        """A new run, recorded with this host and process; runs this host left 'running' in a process that no
        longer exists (killed outright, power lost) are marked interrupted first."""
        host = socket.gethostname()
        with self._write() as session, session.begin():
            for stale in session.scalars(select(Run).where(Run.status == "running")):
                owner = stale.provenance or {}
                if owner.get("host") == host and isinstance(owner.get("pid"), int) and not _process_alive(owner["pid"]):
                    stale.status = "interrupted"
            run = Run(command=command, config=jsonable(config),
                      provenance=jsonable({**provenance, "host": host, "pid": os.getpid()}),
                      status="running", started_at=utcnow())
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, status: str) -> None:
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES[1:])}, got {status!r}")
        with self._write() as session, session.begin():
            run = session.get(Run, run_id)
            if run is None:
                raise ValueError(f"no run {run_id} in {self._label}")
            run.status = status
            run.finished_at = utcnow()

    def runs(self) -> list[dict]:
        with self._read() as session:
            return [row_dict(run, RUN_COLUMNS) for run in session.scalars(select(Run).order_by(Run.id))]

    def latest_run_id(self, command: str | None = None) -> int | None:
        query = select(Run.id).order_by(Run.id.desc()).limit(1)
        if command is not None:
            query = query.where(Run.command == command)
        with self._read() as session:
            return session.scalar(query)

    # -- measurements ------------------------------------------------------------------------------------------

    def add_measurement(self, run_id: int | None, record: dict) -> int:
        """Store one record; ``run_id`` wins over any id in the record, unknown keys land in ``extra``."""
        status = record.get("status")
        if status not in MEASUREMENT_STATUSES:
            raise ValueError(f"measurement status must be one of {', '.join(MEASUREMENT_STATUSES)}, got {status!r}")
        values: dict[str, Any] = {}
        extra = dict(record.get("extra") or {})
        for key, value in record.items():
            if key in ASSIGNED or key == "extra":
                continue
            if key in MEASUREMENT_COLUMNS:
                values[key] = coerce(key, value)
            else:
                extra[key] = value
        values["extra"] = jsonable(extra) if extra else None
        if values.get("created_at") is None:
            values["created_at"] = utcnow()
        try:
            with self._write() as session, session.begin():
                row = Measurement(run_id=run_id, **values)
                session.add(row)
                session.flush()
                return row.id
        except exc.IntegrityError as error:
            raise ValueError(f"cannot store measurement for run {run_id} in {self._label}: {error.orig}") from error

    def link(self, run_id: int, measurement_id: int) -> None:
        """Make a measurement part of a run (a cache hit from an earlier run); linking twice is harmless."""
        with self._write() as session, session.begin():
            if session.get(RunMember, (run_id, measurement_id)) is None:
                session.add(RunMember(run_id=run_id, measurement_id=measurement_id))

    def find_measurement(self, candidate_hash: str, settings_key: str, model_failures: bool = False) -> dict | None:
        """The newest successful measurement of this candidate under these target settings, if any; with
        ``model_failures``, else the newest failure the model itself caused (``extra.model_failure``)."""
        query = (select(Measurement)
                 .where(Measurement.candidate_hash == candidate_hash, Measurement.settings_key == settings_key)
                 .order_by(Measurement.id.desc()))
        with self._read() as session:
            row = session.scalar(query.where(Measurement.status == "ok").limit(1))
            if row is None and model_failures:
                row = next((failed for failed in session.scalars(query.where(Measurement.status == "failed"))
                            if (failed.extra or {}).get("model_failure")), None)
            return None if row is None else measurement_dict(row)

    def measurement_lock(self, candidate_hash: str, settings_key: str):
        """Held from the cache lookup to the write of one measurement (``results.locks``)."""
        database = self.url.database if self._sqlite else None
        path = Path(database) if database not in (None, "", ":memory:") and not database.startswith("file:") else None
        return measurement_lock(self.engine, path, f"{candidate_hash}/{settings_key}")

    def measurements(self, run_id: int | None = None, since: dt.datetime | None = None) -> list[dict]:
        """All measurements (of one run, its linked cache hits included, and/or created at or after ``since``;
        naive datetimes are UTC)."""
        query = select(Measurement).order_by(Measurement.id)
        if run_id is not None:
            members = select(RunMember.measurement_id).where(RunMember.run_id == run_id)
            query = query.where((Measurement.run_id == run_id) | Measurement.id.in_(members))
        if since is not None:
            query = query.where(Measurement.created_at >= since)
        with self._read() as session:
            return [measurement_dict(row) for row in session.scalars(query)]

    def history(self, candidate_names: list[str]) -> list[dict]:
        """Every measurement of these candidates, whichever run made it (a report's history over runs)."""
        rows: list[dict] = []
        names = sorted(set(candidate_names))
        with self._read() as session:
            for start in range(0, len(names), 500):  # under every backend's bound-parameter limit
                query = (select(Measurement).where(Measurement.candidate_name.in_(names[start:start + 500]))
                         .order_by(Measurement.id))
                rows += [measurement_dict(row) for row in session.scalars(query)]
        return sorted(rows, key=lambda row: row["id"])

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._label!r})"
