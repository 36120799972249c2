"""Native code under supervision (core.supervised): a worker that aborts, segfaults or hangs fails one
call with one line naming the stage, the signal and the model, and the next call gets a fresh worker;
a worker never outlives the process that started it, even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import UsageError
from core.supervised import NativeCrash, RemoteError, Worker
from tests import native_faults

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker():
    each = Worker("test stage")
    yield each
    each.close()


def test_a_worker_is_kept_across_calls(worker):
    assert worker.call(native_faults.add, 2, 3) == 5
    first = worker.call(native_faults.pid)
    assert first != os.getpid() and worker.call(native_faults.pid) == first
    assert worker.call(native_faults.add, np.arange(3), 1).tolist() == [1, 2, 3]


def test_an_abort_is_one_line_naming_stage_signal_model_and_last_words(worker, tmp_path):
    log = tmp_path / "stage.log"
    with pytest.raises(NativeCrash) as caught:
        worker.call(native_faults.abort_after_saying, "arena exhausted", label="m1", doing="loading", log=log)
    assert str(caught.value) == "test stage aborted (SIGABRT) while loading m1; it printed: arena exhausted"
    assert "arena exhausted" in log.read_text()  # the log is kept beside the model's artifacts
    assert worker.call(native_faults.add, 1, 1) == 2  # a fresh worker takes the next call


def test_a_segfault_and_a_hang(worker):
    with pytest.raises(NativeCrash, match=r"^test stage crashed \(SIGSEGV\) while compiling m2$"):
        worker.call(native_faults.read_null, label="m2", doing="compiling")
    started = time.monotonic()
    with pytest.raises(NativeCrash, match=r"^test stage timed out after 1 s while compiling m3$"):
        worker.call(native_faults.sleep, 30, label="m3", doing="compiling", timeout=1.0)
    assert time.monotonic() - started < 10
    assert worker.call(native_faults.add, 2, 2) == 4


def test_errors_come_back_as_what_they_are(worker):
    with pytest.raises(UsageError, match="^bad spec$"):
        worker.call(native_faults.refuse, "bad spec")
    with pytest.raises(RemoteError) as caught:
        worker.call(native_faults.divide, 1, 0)
    assert str(caught.value) == "ZeroDivisionError: division by zero"
    assert "native_faults.py" in caught.value.remote_traceback


def test_a_worker_dies_with_a_killed_harness(tmp_path):
    """The process that started the worker is SIGKILLed (no cleanup runs); the kernel kills the worker."""
    script = ("import sys, time; from core.supervised import worker; from tests import native_faults; "
              "print(worker('w').call(native_faults.pid), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker_pid = int(parent.stdout.readline())
    os.kill(worker_pid, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    assert not _alive(worker_pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
