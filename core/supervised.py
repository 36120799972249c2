"""Native code under supervision: the TF converter, Vela's compiler and the host TFLM interpreter run in
worker processes, so an abort, a segfault or a hang in them fails one measurement, not the harness.

A ``Worker`` is one process per kind of work (``worker("host TFLM")``), started on first use and kept
across candidates, so the per-call cost is a pipe round trip, not a Python start. ``Worker.call``
runs an importable function there and returns its result. The worker's stderr (where native code
prints its last words: TFLM's ``MicroPrintf``, Vela's warnings) goes to a log file per call. When the
worker dies by a signal or overruns its time, ``call`` raises ``NativeCrash``, a ``ModelError``
with one line naming the stage, the signal and the model, plus the last line the native code printed;
the next call starts a fresh worker. Workers die with the harness (``core.parent_death``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from core.errors import HarnessError, ModelError
from core.parent_death import die_with_parent

VERBS = {signal.SIGABRT: "aborted", signal.SIGSEGV: "crashed", signal.SIGBUS: "crashed", signal.SIGFPE: "crashed",
         signal.SIGILL: "crashed", signal.SIGKILL: "was killed"}


class NativeCrash(ModelError):
    """A worker died by a signal or overran its time limit while working on one model."""


class RemoteError(HarnessError):
    """An unexpected exception inside the worker (a bug, not the model's fault): its type, message and traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str):
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name, self.remote_traceback = type_name, remote_traceback


class Worker:
    def __init__(self, name: str):
        self.name = name
        self._process = None
        self._connection = None
        self._lock = threading.Lock()
        self._starter: threading.Thread | None = None  # the kernel kills the worker when this thread ends

    def call(self, function, *args, label: str = "model", doing: str = "working on", timeout: float = 600.0,
             log: Path | None = None, **kwargs):
        """``function(*args, **kwargs)`` in the worker; ``doing`` and ``label`` name the work in a crash line
        ("host TFLM aborted (SIGABRT) while loading mnv2"). ``log`` keeps the worker's stderr of this call."""
        with self._lock:
            self._ensure_started()
            log_path = Path(log) if log is not None else None
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
            capture = log_path
            if capture is None:
                descriptor, temporary = tempfile.mkstemp(prefix="worker-", suffix=".log")
                os.close(descriptor)  # the worker opens it by name
                capture = Path(temporary)
            try:
                self._connection.send((function, args, kwargs, str(capture)))
                reply = self._await(timeout, label, doing, capture)
            finally:
                if log_path is None or (capture.is_file() and capture.stat().st_size == 0):
                    capture.unlink(missing_ok=True)
        kind, payload = reply
        if kind == "ok":
            return payload
        if kind == "expected":
            module, name, message = payload
            raise _import_error_class(module, name)(message)
        raise RemoteError(*payload)

    def _await(self, timeout: float, label: str, doing: str, capture: Path):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise NativeCrash(f"{self.name} timed out after {timeout:.0f} s while {doing} {label}{_last_words(capture)}")
            try:
                if self._connection.poll(min(remaining, 1.0)):
                    return self._connection.recv()
            except (EOFError, OSError):
                pass
            if self._process.poll() is not None:
                code = self._process.returncode
                self._discard()
                raise NativeCrash(f"{self.name} {_death(code)} while {doing} {label}{_last_words(capture)}")

    def start(self) -> None:
        """Start the worker now, from this thread (it lives as long as this thread does: start workers
        from a lasting thread before calling them from short-lived ones)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            if self._starter is not None and self._starter.is_alive():
                return
            self._kill()  # its starting thread has ended: the kernel is killing it, or soon will
        self._discard()
        self._starter = threading.current_thread()
        ours, theirs = socket.socketpair()
        # A plain interpreter, not multiprocessing's spawn: the caller's __main__ is never re-imported, so a
        # script without a main guard works; the caller's sys.path travels in PYTHONPATH.
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path or os.getcwd() for path in sys.path)}
        command = [sys.executable, "-c", f"from core.supervised import serve; serve({theirs.fileno()}, {os.getpid()})"]
        self._process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=environment,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        theirs.close()
        self._connection = Connection(ours.detach())

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._discard()

    def _discard(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._process, self._connection = None, None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.send(None)
                except OSError:
                    pass
            if self._process is not None:
                try:
                    self._process.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None


_WORKERS: dict[str, Worker] = {}


def worker(name: str) -> Worker:
    """The process-wide worker of one kind of work, started on first use."""
    if name not in _WORKERS:
        _WORKERS[name] = Worker(name)
    return _WORKERS[name]


def close_workers() -> None:
    for each in list(_WORKERS.values()):
        each.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"{VERBS.get(number, 'died')} ({name})"
    return f"exited with status {exitcode}"


def _last_words(capture: Path) -> str:
    """The last line the native code printed before it died, if any."""
    try:
        lines = [line.strip() for line in capture.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f"; it printed: {lines[-1][:300]}" if lines else ""


def _import_error_class(module: str, name: str):
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return HarnessError
    return cls if isinstance(cls, type) and issubclass(cls, HarnessError) else HarnessError


def serve(fd: int, parent_pid: int) -> None:
    """The worker's loop: one (function, args, kwargs, log) at a time, until the parent closes the pipe."""
    die_with_parent(parent_pid)
    connection = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, args, kwargs, log = message
        saved = os.dup(1), os.dup(2)  # native code prints to both
        with open(log, "ab") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
        try:
            reply = ("ok", function(*args, **kwargs))
        except HarnessError as exc:
            reply = ("expected", (type(exc).__module__, type(exc).__name__, str(exc)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the harness as data
            reply = ("error", (type(exc).__name__, str(exc), traceback.format_exc()))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
        try:
            connection.send(reply)
        except Exception as exc:  # an unpicklable result
            connection.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
