"""One measurement at a time per (candidate, settings key), across processes and hosts.

The cache lookup and the write of a measurement lie minutes apart (export, compile, inference), so
processes measuring the same candidate at once would each miss the cache and each store a row. The
pipeline holds this lock from the lookup to the write; the others wait, then find the stored row.

- PostgreSQL (the farm's shared store): a session-level advisory lock on a dedicated connection, held
  for the measurement and released when it ends (or when the connection dies with its process).
- SQLite: a POSIX record lock on one byte of ``<store>.locks``, the byte chosen by the key; the kernel
  drops it when the process dies. An in-memory store is one process's: a thread lock suffices.

Record locks belong to a process, not a thread, so a thread lock per key is taken first as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from pathlib import Path

from sqlalchemy import text

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()
LOCK_BYTES = 2 ** 40  # the key's byte in the lock file: a collision only makes two keys wait for each other


def _key_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def measurement_lock(engine, sqlite_path: Path | None, key: str):
    with _GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key_number(key)})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key_number(key)})
                    connection.commit()
        elif sqlite_path is not None:
            fd = os.open(f"{sqlite_path}.locks", os.O_RDWR | os.O_CREAT, 0o644)
            offset = _key_number(key) % LOCK_BYTES
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
            finally:
                os.close(fd)
        else:
            yield
