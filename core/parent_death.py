"""Children that die with the harness: a process started with ``die_with_parent`` as its ``preexec_fn``
(or calling it first thing) is sent SIGKILL by the kernel when the process that started it dies, even
by SIGKILL, so no emulator or worker outlives a killed run (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere
a no-op, and the caller's own close is the only guard)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# Looked up once here, in the parent: a preexec_fn runs between fork and exec, where finding a library
# (which starts ldconfig) could deadlock a threaded process.
_PRCTL = (ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
          if sys.platform.startswith("linux") else None)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies. ``parent_pid``, when given, closes the
    race of a parent that died before the request: then this process exits at once. The signal comes
    when the *thread* that started this process ends; the harness starts its children from the thread
    that keeps them."""
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
