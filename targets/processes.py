"""External processes the targets start: every one dies with the harness (``dies_with_harness``, even when the
harness is SIGKILLed), and every tool run (``run_step``: cmake, make, arm-none-eabi-size, pyOCD) has a
timeout that kills it with everything it started and becomes one HarnessError line naming the step."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess

from core.errors import HarnessError
from core.parent_death import die_with_parent


def dies_with_harness():
    """A ``preexec_fn`` for a child of this process: the kernel kills the child when this process dies
    (core.parent_death; a child whose parent is already gone exits at once)."""
    return functools.partial(die_with_parent, os.getpid())


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process``'s process group (it was started with start_new_session), if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_step(command: list[str], step: str, timeout_s: float, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run ``command`` (text output captured) in its own process group; past ``timeout_s`` the group is
    killed (a build's compilers too) and the step is one HarnessError line, as is a tool that cannot start."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                   cwd=cwd, env=env, start_new_session=True, preexec_fn=dies_with_harness())
    except OSError as error:
        raise HarnessError(f"{step}: cannot run {command[0]} ({error.strerror or error})") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
        process.communicate()
        raise HarnessError(f"{step} did not finish within {timeout_s:g} s and was killed") from None
    except BaseException:
        kill_group(process)
        process.wait()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
