"""`harness firmware check|setup`: what a TFLM checkout lacks, said item by item, and where the library
is found. No TFLM or cross compiler needed: the checkouts here are folder trees."""

import shutil
from pathlib import Path

from harness.cli import main
from targets import firmware
from targets.qemu_an547 import QemuAn547Target

DOWNLOADS = Path("tensorflow/lite/micro/tools/make/downloads")


def _checkout(root: Path) -> Path:
    (root / "tensorflow" / "lite" / "micro").mkdir(parents=True)
    (root / "tensorflow" / "lite" / "micro" / "micro_interpreter.cc").write_text("")
    for folder in firmware.TFLM_DOWNLOADS:
        (root / DOWNLOADS / folder).mkdir(parents=True, exist_ok=True)
        (root / DOWNLOADS / folder / "README").write_text("")
    return root


def test_check_names_every_missing_download_and_exits_2(tmp_path, capsys):
    root = _checkout(tmp_path / "tflm")
    for folder in ("pigweed", "cmsis_nn"):
        (root / DOWNLOADS / folder / "README").unlink()
    assert main(["firmware", "check", "--tflm-root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "--  downloads/pigweed" in out and "missing: put pigweed 47268dff" in out
    assert "missing: put CMSIS-NN 4ab83cc3" in out and "ok  downloads/gemmlowp" in out
    assert "not built yet: python -m harness firmware setup" in out


def test_a_complete_checkout_passes_and_its_library_is_found_in_the_cache_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = _checkout(tmp_path / "tflm")
    assert main(["firmware", "check", "--tflm-root", str(root)]) == 0
    built = root / "gen" / "cortex_m_generic_cortex-m55_release_with_logs_cmsis_nn_gcc" / "lib" / "libtensorflow-microlite.a"
    built.parent.mkdir(parents=True)
    built.write_bytes(b"!<arch>\n")
    assert firmware.find_tflm_library(root) == built
    cached = firmware.tflm_cache(root, "cmsis_nn") / built.relative_to(root / "gen")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"!<arch>\n")
    assert firmware.find_tflm_library(root) == cached
    assert firmware.find_tflm_library(root, "reference") is None  # other kernels, other library


def test_the_library_cache_follows_the_tflm_sources_not_the_checkout_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = _checkout(tmp_path / "one")
    second = tmp_path / "two"
    shutil.copytree(first, second)
    (second / DOWNLOADS / "cmsis" / "README").write_text("downloads do not count: the build files pin them")
    assert firmware.tflm_cache(first, "cmsis_nn") == firmware.tflm_cache(second, "cmsis_nn")
    assert firmware.tflm_cache(first, "cmsis_nn") != firmware.tflm_cache(first, "reference")
    assert firmware.tflm_cache(first, "cmsis_nn") != firmware.tflm_cache(first, "cmsis_nn", "ethos_u")
    edited = tmp_path / "edited"
    shutil.copytree(first, edited)
    (edited / "tensorflow" / "lite" / "micro" / "micro_interpreter.cc").write_text("// a local change\n")
    assert firmware.tflm_cache(edited, "cmsis_nn") != firmware.tflm_cache(first, "cmsis_nn")


def test_no_checkout_is_one_line_and_the_target_says_how_to_build(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    assert main(["firmware", "check"]) == 2
    assert "pass --tflm-root DIR, set [firmware] tflm_root in --config or set TFLM_ROOT" in capsys.readouterr().err
    # the config names the checkout, as for the targets: its path is the one checked
    config = tmp_path / "lab.toml"
    config.write_text(f'[firmware]\ntflm_root = "{tmp_path / "elsewhere"}"\n')
    assert main(["firmware", "check", "--config", str(config)]) == 2
    assert str(tmp_path / "elsewhere") in capsys.readouterr().out
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    without_library = QemuAn547Target(tflm_root=str(_checkout(tmp_path / "tflm"))).available()
    without_checkout = QemuAn547Target(tflm_root=None).available()
    if firmware.missing_tools() or shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-g++") is None:
        assert "apt-get install" in without_library and "apt-get install" in without_checkout
    else:
        assert "build it once with: python -m harness firmware setup" in without_library
        assert without_checkout.startswith("no TFLM checkout: set TFLM_ROOT")
