"""Measures seeded byte-level mutations of one int8 model on ``vela``, each through the CLI's ``main`` in
this one process, and prints one JSON line per mutant: its exit code and what it printed on stderr.
The fuzz test runs this file as a child process, so a native crash that escaped the workers would show
as the child dying by a signal (``tests/test_fuzz_models.py``).

    python tests/fuzz_runner.py MODEL OUT_DIR FIRST COUNT
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np


def mutant(model: bytes, seed: int) -> bytes:
    """One of four mutations by seed: 1-8 random bytes replaced, a run of bytes zeroed, a 4-byte word set to
    an extreme value (an offset or length pointing anywhere), or the file cut short."""
    rng = np.random.default_rng(seed)
    data = bytearray(model)
    kind = seed % 4
    if kind == 0:
        for position in rng.integers(8, len(data), rng.integers(1, 9)):
            data[position] = int(rng.integers(0, 256))
    elif kind == 1:
        start = int(rng.integers(8, len(data) - 64))
        data[start:start + int(rng.integers(1, 64))] = bytes(int(rng.integers(1, 64)))
    elif kind == 2:
        start = int(rng.integers(8, len(data) - 4)) & ~3
        data[start:start + 4] = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000])).to_bytes(4, "little")
    else:
        data = data[: int(rng.integers(8, len(data)))]
    return bytes(data)


def main(model_path: str, out: str, first: int, count: int) -> None:
    from harness.cli import main as cli

    model = Path(model_path).read_bytes()
    for seed in range(first, first + count):
        path = Path(out) / f"mutant-{seed}.tflite"
        path.write_bytes(mutant(model, seed))
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = cli(["measure", "--tflite", str(path), "--target", "vela", "--out", out, "--json"])
        print(json.dumps({"seed": seed, "code": code, "stderr": stderr.getvalue(), "stdout": stdout.getvalue()}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
