"""Functions the supervised-worker tests run in a worker process (they must be importable there). The
crashes are the real thing (abort, a null read, a hang); only their cause is made up."""

from __future__ import annotations

import ctypes
import os
import time

from core.errors import UsageError


def add(a, b):
    return a + b


def pid() -> int:
    return os.getpid()


def abort_after_saying(words: str) -> None:
    os.write(2, words.encode() + b"\n")
    os.abort()


def read_null() -> None:
    ctypes.string_at(0)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def refuse(message: str) -> None:
    raise UsageError(message)


def divide(a, b):
    return a / b
