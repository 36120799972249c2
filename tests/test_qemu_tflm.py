"""A candidate's int8 model in TFLM firmware on QEMU mps3-an547, checked against host TFLM. Needs a TFLM
checkout with its Cortex-M55 library (TFLM_ROOT); skips with the reason otherwise (as in CI)."""

import json
import subprocess

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


def test_the_corstone300_image_links_the_real_driver_and_boots_on_an547(tmp_path, hand_tflite):
    """The NPU image, Vela model and Ethos-U core driver included, on the one SSE-300 emulator here: QEMU's
    AN547 models no NPU, so the driver's init fails and 'infer' says so in one line. The FVP run itself
    needs Arm's FVP (corstone300 target)."""
    from targets import firmware
    from targets.corstone300 import Corstone300Target
    from targets.qemu_an547 import QemuSession
    from targets.serial_link import ProtocolError

    npu = Corstone300Target()
    if firmware.check_ethosu_driver(npu.driver) or firmware.find_tflm_library(npu.tflm_root, "cmsis_nn", "ethos_u") is None:
        pytest.skip("no Ethos-U driver or TFLM library with it: python -m harness firmware setup --ethos-u")
    elf = npu.build_image(hand_tflite, tmp_path, "hand", 64 * 1024)
    figures = firmware.memory_figures(elf)
    assert figures["flash_breakdown"]["model"] > 0 and npu._vela_npu_cycles > 0
    symbols = dict(line.split()[::-1][:2] for line in subprocess.run(
        ["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout.splitlines() if " " in line)
    # the driver is linked, and the port's PMU callbacks replace its weak no-op ones
    assert symbols["ethosu_invoke_v3"] == "T" and symbols["ethosu_inference_begin"] == "T"
    with QemuSession(elf) as session:
        assert session.link.command("name") == ["m-name-dut-[udc-harness corstone300]"]
        profile = session.link.profile()
        assert profile["model"] == "ic01" and profile["arena_bytes"] > 0  # the Vela model's tensors allocate
        session.link.load_input(bytes(profile["input_bytes"]))
        with pytest.raises(ProtocolError, match="the Ethos-U55 did not initialise"):
            session.link.infer(runs=1, warmups=0)
