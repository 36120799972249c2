"""Every bad input a user can bring is one line saying what is wrong and how to fix it, exit 2, no
traceback, and nothing already stored is lost. Each case starts from a valid candidate and breaks one
thing."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from harness.cli import main
from results.store import Store
from tests.candidates import make_candidate


def _spec(path):
    return json.loads((path / "spec.json").read_text())


def _write_spec(path, spec):
    (path / "spec.json").write_text(json.dumps(spec))


def _npy(header_shape, dtype="<f4", data=b""):
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def _replace_member(path, key, payload):
    with zipfile.ZipFile(path / "weights.npz") as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[f"{key}.npy"] = payload
    with zipfile.ZipFile(path / "weights.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def top_level_list(path):
    _write_spec(path, [_spec(path)])


def layer_not_an_object(path):
    spec = _spec(path)
    spec["layers"][1] = "conv"
    _write_spec(path, spec)


def not_utf8(path):
    (path / "spec.json").write_bytes(b'{"name": "caf\xe9"}')


def deeply_nested(path):
    (path / "spec.json").write_text("[" * 100_000 + "]" * 100_000)


def no_num_classes(path):
    spec = _spec(path)
    del spec["num_classes"]
    _write_spec(path, spec)


def nan_weights(path):
    with np.load(path / "weights.npz") as archive:
        weights = dict(archive)
    weights["stem.weight"][0, 0, 0, 0] = np.nan
    np.savez(path / "weights.npz", **weights)


def huge_input(path):
    spec = _spec(path)
    spec["input_shape"] = [100_000, 100_000, 3]
    _write_spec(path, spec)


def huge_layer(path):
    spec = _spec(path)
    spec["input_shape"] = [2048, 2048, 1]
    spec["layers"][0]["out_channels"] = 64  # a 1024 x 1024 x 64 activation at least
    _write_spec(path, spec)


def archive_claims_gigabytes(path):
    _replace_member(path, "stem.weight", _npy((100_000, 100_000)))  # 40 GB promised, a few bytes present


def object_array(path):
    _replace_member(path, "stem.weight", _npy((3, 3, 1, 8), dtype="|O"))


CASES = {
    top_level_list: "$: expected a JSON object",
    layer_not_an_object: "$.layers[1]: expected a layer object",
    not_utf8: "not UTF-8 text",
    deeply_nested: "nested too deeply",
    no_num_classes: "$.num_classes: expected a value (the key is missing)",
    nan_weights: "stem.weight holds NaN or infinite values",
    huge_input: "$.input_shape[0]: expected an integer in 1..2048",
    huge_layer: "over the 16,777,216 an Ethos-U55 model can hold",
    archive_claims_gigabytes: "stem.weight has shape (100000, 100000) but the spec implies",
    object_array: "holds object values",
}


@pytest.fixture
def out_with_a_row(tmp_path):
    out = tmp_path / "out"
    with Store.for_output_dir(out) as store:
        store.add_measurement(None, {"status": "ok", "candidate_name": "kept", "candidate_hash": "k" * 64,
                                     "target": "vela", "flash_bytes": 1000})
    return out


@pytest.mark.parametrize("breakage", list(CASES), ids=[case.__name__ for case in CASES])
def test_bad_candidate_is_one_line_exit_2(breakage, tmp_path, out_with_a_row, capsys):
    candidate = make_candidate().save(tmp_path / "c")
    breakage(candidate)
    code = main(["measure", "--candidate", str(candidate), "--target", "vela", "--out", str(out_with_a_row)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert CASES[breakage] in lines[0] and "Traceback" not in err
    with Store.for_output_dir(out_with_a_row) as store:
        assert [row["candidate_name"] for row in store.measurements()] == ["kept"]


def test_config_file_not_utf8(tmp_path, out_with_a_row, capsys, hand_tflite_file):
    config = tmp_path / "harness.toml"
    config.write_bytes(b"[vela]\naccelerator = \"ethos-u55-\xff\"\n")
    code = main(["measure", "--tflite", str(hand_tflite_file), "--config", str(config), "--out", str(out_with_a_row)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"error: {config}: not UTF-8 text (byte 32); save the config as UTF-8 TOML"
