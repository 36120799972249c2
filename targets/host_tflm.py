"""The host TFLM interpreter (tflite-micro wheel): the reference output of an int8 model.

It runs the same kernels as firmware TFLM, so any serial target can be checked bit-exact
against it. It cannot run a Vela-compiled model (custom op ethos-u), so it always takes the
int8 model before Vela.

TFLM aborts the process on some models instead of returning an error, so the interpreter lives in a
supervised worker process (``core.supervised``): an abort is one failed measurement naming the model,
and the next model gets a fresh worker. Models TFLM is known to abort on are refused before
(``core.tflm_limits``).

A batch of at least ``PARALLEL_MIN_INPUTS`` inputs is split over ``workers`` such processes (default:
one per core, at most ``MAX_WORKERS``), each running its contiguous share, and the outputs are put back
in order: the same kernels on the same inputs, so the outputs are the same bytes as in one process.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from core.errors import ModelError
from core.supervised import NativeCrash, worker
from core.tflite_model import read_tflite
from core.tflm_limits import check_tflm_can_run

ARENA_BYTES = 4 * 1024 * 1024  # generous: the host has room, the real need is read back below
LOAD_SECONDS = 120.0  # time allowed to load a model, and the fixed part of every call
SECONDS_PER_INFERENCE = 0.5  # about 150x what the main job's networks take per image on one core
WORKER = "host TFLM"
MAX_WORKERS = 8
PARALLEL_MIN_INPUTS = 64  # smaller batches run in one worker: splitting them costs more than it saves


def _worker_name(index: int) -> str:
    """The worker of the index-th share of a batch; the first is the one single calls use."""
    return WORKER if index == 0 else f"{WORKER} {index + 1}"


def default_workers() -> int:
    """Host TFLM workers for a batch: one per core this process may use, at most ``MAX_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS))


class HostTFLM:
    """The interpreter of one model, in the host TFLM worker; ``log`` keeps what TFLM printed."""

    def __init__(self, tflite: bytes, label: str = "model", log: Path | None = None, workers: int = 0):
        check_tflm_can_run(read_tflite(tflite, label=label), label)
        self._tflite, self._label, self._log = tflite, label, log
        self.workers = workers or default_workers()
        self._digest = hashlib.sha256(tflite).hexdigest()
        shape, dtype = self._call(_load, doing="loading")
        self.input_shape, self.input_dtype = tuple(shape), np.dtype(dtype)

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs)
        shares = min(self.workers, len(inputs) // (PARALLEL_MIN_INPUTS // 2)) if len(inputs) >= PARALLEL_MIN_INPUTS else 1
        if shares <= 1:
            return self._call(_infer, inputs, doing=f"running {len(inputs)} input(s) through",
                              timeout=LOAD_SECONDS + SECONDS_PER_INFERENCE * len(inputs))
        return self._infer_in_parallel(np.array_split(inputs, shares))

    def _infer_in_parallel(self, parts: list[np.ndarray]) -> np.ndarray:
        """Each part in its own worker at once; the outputs in the parts' order. The first failure (in
        the parts' order) is raised once every part is done."""
        from concurrent.futures import ThreadPoolExecutor

        def run(index: int):
            log = None if self._log is None or index == 0 else \
                self._log.with_name(f"{self._log.stem}-{index + 1}{self._log.suffix}")  # one log per process
            return self._call(_infer, parts[index], doing=f"running {len(parts[index])} input(s) through",
                              timeout=LOAD_SECONDS + SECONDS_PER_INFERENCE * len(parts[index]),
                              name=_worker_name(index), log=log)

        for index in range(len(parts)):  # started from this thread: a worker dies with the thread that starts it
            worker(_worker_name(index)).start()
        with ThreadPoolExecutor(len(parts)) as pool:  # leaving the block waits for every part
            futures = [pool.submit(run, index) for index in range(len(parts))]
        return np.concatenate([future.result() for future in futures])

    def arena_bytes(self) -> int:
        """Arena actually used, as TFLM reports it."""
        return self._call(_arena_bytes, doing="reading the arena size of")

    def _call(self, function, *args, doing: str, timeout: float = LOAD_SECONDS, name: str = WORKER,
              log: Path | None = None):
        try:
            return worker(name).call(function, self._digest, self._tflite, *args, label=self._label, doing=doing,
                                     timeout=timeout, log=log or self._log)
        except NativeCrash:
            raise
        except ModelError as exc:  # TFLM's error status, raised in the worker without the model's name
            raise ModelError(f"{self._label}: {exc}") from None


# ---------------------------------------------------------------- in the worker process

_LOADED: dict[str, object] = {}  # digest -> interpreter; one model at a time


def _interpreter(digest: str, tflite: bytes):
    if digest not in _LOADED:
        from tflite_micro import runtime

        _LOADED.clear()
        try:
            _LOADED[digest] = runtime.Interpreter.from_bytes(tflite, arena_size=ARENA_BYTES)
        except RuntimeError as exc:  # TFLM's error status: an operator it lacks, an arena too small
            raise ModelError(f"host TFLM cannot load the model: {_first_line(exc)}") from None
    return _LOADED[digest]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load(digest: str, tflite: bytes) -> tuple[tuple[int, ...], str]:
    details = _interpreter(digest, tflite).get_input_details(0)
    return tuple(int(d) for d in details["shape"]), np.dtype(details["dtype"]).str


def _infer(digest: str, tflite: bytes, inputs: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(digest, tflite)
    details = interpreter.get_input_details(0)
    shape, dtype = tuple(int(d) for d in details["shape"]), details["dtype"]
    outputs = []
    for sample in inputs:
        # TFLM may reuse the input buffer as scratch: set the input before every invoke.
        interpreter.set_input(sample.reshape(shape).astype(dtype), 0)
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise ModelError(f"host TFLM failed to run the model: {_first_line(exc)}") from None
        outputs.append(interpreter.get_output(0).copy())
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.int8)


def _arena_bytes(digest: str, tflite: bytes) -> int:
    """TFLM prints the arena total only to stderr, so fd 2 is captured around the call."""
    interpreter = _interpreter(digest, tflite)
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    match = re.search(r"Arena allocation total (\d+) bytes", text)
    return int(match.group(1)) if match else 0


def tflm_version() -> str:
    from importlib.metadata import version

    return version("tflite-micro")
