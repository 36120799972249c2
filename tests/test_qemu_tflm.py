"""A candidate's int8 model in TFLM firmware on QEMU mps3-an547, checked against host TFLM. Needs a TFLM
checkout with its Cortex-M55 library (TFLM_ROOT); skips with the reason otherwise (as in CI)."""

import json

import pytest

from harness.cli import main
from targets.qemu_an547 import QemuAn547Target

TARGET = QemuAn547Target()
pytestmark = pytest.mark.skipif(TARGET.available() is not None, reason=f"qemu-an547: {TARGET.available()}")


def test_candidate_runs_bit_exact_with_deterministic_instructions(capsys, tmp_path, hand_candidate):
    directory = hand_candidate.save(tmp_path / "candidate")
    records = []
    for force in ([], ["--force"]):
        assert main(["measure", "--candidate", str(directory), "--target", "qemu-an547", "--dataset", "synthetic",
                     "--eval-samples", "32", "--json", "--out", str(tmp_path / "out"), *force]) == 0
        records.append(json.loads(capsys.readouterr().out.strip()))
    first, second = records
    assert first["bit_exact"] is True and first["instructions"] > 0
    assert abs(first["instructions"] - second["instructions"]) <= 1  # SysTick under -icount: deterministic
    breakdown = first["flash_breakdown"]
    assert breakdown["model"] > 0 and first["flash_bytes"] == sum(breakdown.values())
    assert first["accuracy_samples"] == 32 and first["tflm_arena_bytes"] > 0

    assert main(["measure", "--candidate", str(directory), "--target", "vela", "--dataset", "synthetic",
                 "--eval-samples", "32", "--json", "--out", str(tmp_path / "out")]) == 0
    vela = json.loads(capsys.readouterr().out.strip())
    assert vela["accuracy_int8"] == first["accuracy_int8"]  # same kernels, same outputs
