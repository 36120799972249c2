"""One firmware for many models on qemu-an547: built once per op set into the cache, each model put into
its slot by QEMU's loader; the same outputs and instruction counts as the model linked in, and a Flash
figure within LINKED_DIFFERENCE_BYTES of the linked image's. Needs TFLM (TFLM_ROOT); skips otherwise."""

import json
import struct

import numpy as np
import pytest

from harness.cli import main
from harness.export import to_int8_tflite
from targets import runtime_image
from targets.qemu_an547 import QemuAn547Target
from targets.serial_link import ProtocolError
from tests.candidates import make_candidate

TARGET = QemuAn547Target()
needs_tflm = pytest.mark.skipif(TARGET.available() is not None, reason=f"qemu-an547: {TARGET.available()}")


def test_the_slot_holds_a_header_and_the_model():
    blob = runtime_image.model_blob(b"TFL3model")
    assert blob[:4] == b"UDCM" and struct.unpack("<I", blob[4:8]) == (9,) and blob[16:] == b"TFL3model"
    assert len(blob) == runtime_image.HEADER_BYTES + 9


def _measure(directory, out, capsys, loading):
    config = out.parent / f"{loading}.toml"
    config.write_text(f'[firmware]\nmodel_loading = "{loading}"\n')
    assert main(["measure", "--candidate", str(directory), "--target", "qemu-an547", "--dataset", "synthetic",
                 "--eval-samples", "24", "--json", "--out", str(out), "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out.strip())


@needs_tflm
def test_models_of_one_op_set_share_one_firmware_and_measure_as_linked(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime_image, "image_cache", lambda: tmp_path / "images")
    first, second = make_candidate(bits=4, nonzero=0.5, seed=3), make_candidate(bits=8, nonzero=1.0, seed=4)
    rows = {}
    for candidate in (first, second):
        directory = candidate.save(tmp_path / candidate.name)
        for loading in ("run-time", "linked"):
            rows[candidate.name, loading] = _measure(directory, tmp_path / f"out-{loading}", capsys, loading)
    images = list((tmp_path / "images").glob("an547-*/build/benchmark.elf"))
    assert len(images) == 1  # both models ran on the one firmware built for their op set
    for candidate in (first, second):
        loaded, linked = rows[candidate.name, "run-time"], rows[candidate.name, "linked"]
        assert loaded["bit_exact"] is True and loaded["accuracy_int8"] == linked["accuracy_int8"]
        assert abs(loaded["instructions"] - linked["instructions"]) <= 1
        assert loaded["target_settings"]["model_loading"] == "run-time"
        assert loaded["flash_breakdown"]["model"] == linked["flash_breakdown"]["model"]
        assert 0 <= loaded["flash_bytes"] - linked["flash_bytes"] <= runtime_image.LINKED_DIFFERENCE_BYTES
        assert loaded["sram_bytes"] == linked["sram_bytes"]


@needs_tflm
def test_a_firmware_started_without_a_model_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_image, "image_cache", lambda: tmp_path / "images")
    tflite = to_int8_tflite(make_candidate(), np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32))
    elf = TARGET.build_image(tflite, tmp_path, "hand", 64 * 1024)
    TARGET.model_slot = []  # the test double's one change: QEMU starts without the loader
    with TARGET.open_session(elf) as session:
        session.link.load_input(bytes(784))
        with pytest.raises(ProtocolError, match=r"^qemu-an547: 'infer' failed on the target: no model in the model "
                                                r"slot at 0x70000000: the host loads one before the start"):
            session.link.infer(1, 0)
