"""Fuzzed models never take the harness down: seeded mutations of a small int8 model (bytes replaced,
zeroed, set to extreme offsets, the file cut short) measured on ``vela`` through the CLI. Each mutant is
refused before any work (exit 2, one line), or measured into a row: ok (exit 0) or failed with a
one-line error (exit 1). The process measuring them never dies by a signal: a crash in Vela's compiler
or in host TFLM fails that mutant's row (``core.supervised``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from results.store import Store

ROOT = Path(__file__).resolve().parents[1]


def fuzz(model: Path, out: Path, first: int, count: int) -> list[dict]:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_runner.py"), str(model), str(out),
                             str(first), str(count)], capture_output=True, text=True, cwd=ROOT,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=60 * count + 120)
    assert result.returncode == 0, f"the measuring process died ({result.returncode}): {result.stderr[-2000:]}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def check(outcomes: list[dict], out: Path, count: int) -> None:
    assert len(outcomes) == count
    with Store.for_output_dir(out) as store:
        rows = {row["candidate_name"]: row for row in store.measurements()}
    for outcome in outcomes:
        name = f"mutant-{outcome['seed']}"
        assert outcome["code"] in (0, 1, 2), outcome
        lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
        assert "Traceback" not in outcome["stderr"], outcome
        if outcome["code"] == 2:
            assert len(lines) == 1 and lines[0].startswith("error: "), outcome
            assert name not in rows
            continue
        row = rows[name]  # measured: a row, whatever happened
        assert row["status"] == ("ok" if outcome["code"] == 0 else "failed"), (outcome, row)
        if row["status"] == "failed":
            assert row["error"] and "\n" not in row["error"], row


def test_twenty_mutants_each_a_row_or_one_line(hand_tflite_file, tmp_path):
    check(fuzz(hand_tflite_file, tmp_path, 0, 20), tmp_path, 20)


@pytest.mark.slow
def test_four_hundred_mutants_each_a_row_or_one_line(hand_tflite_file, tmp_path):
    check(fuzz(hand_tflite_file, tmp_path, 1000, 400), tmp_path, 400)


@pytest.mark.parametrize("seed, message", [(1178, "model has no output tensor"),
                                           (1252, "operator 2 (CONV_2D) refers to tensor 179, but the model has 16")])
def test_dangling_tensor_references_are_one_line(hand_tflite, seed, message):
    """Mutants the 400-mutant run found: an empty output list, an operator pointing past the tensors."""
    from core.errors import UsageError
    from core.tflite_model import read_tflite
    from tests.fuzz_runner import mutant

    with pytest.raises(UsageError, match=f"^m: {re.escape(message)}; re-export the model or copy it again$"):
        read_tflite(mutant(hand_tflite, seed), label="m")
