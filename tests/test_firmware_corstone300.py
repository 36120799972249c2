"""corstone300 and board targets where neither the FVP, the Ethos-U driver, pyOCD nor a board is at hand
(as in CI): the corstone300 port's no-model firmware built and booted on QEMU's mps3-an547 (the same
SSE-300 memory map), the FVP session driven through a stand-in FVP, command lines, and the one-line
reasons that name what to install and where the harness looks."""

import stat
import sys

import pytest

from core.errors import UsageError
from harness.cli import main
from targets import firmware
from targets import get_target
from targets.board import BoardTarget, pyocd_flash_command
from targets.corstone300 import FVP, FVP_TIMELIMIT_S, Corstone300Target, FvpSession, fvp_command
from targets.serial_link import ProtocolError
from tests.test_firmware_qemu import needs_qemu


@pytest.fixture(scope="module")
def corstone300_elf(tmp_path_factory):
    if firmware.missing_tools():
        pytest.skip(firmware.missing_tools())
    return firmware.build(tmp_path_factory.mktemp("firmware") / "corstone300", "corstone300")


def _fake_fvp(directory):
    """Test double of the FVP: names its UART0 port as the FVP does, then runs the image on QEMU."""
    script = directory / FVP
    script.write_text(f"""#!{sys.executable}
import os, socket, sys
elf = sys.argv[sys.argv.index("-a") + 1]
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
print(f"telnetterminal0: Listening for serial connection on port {{port}}", flush=True)
os.execvp("qemu-system-arm", ["qemu-system-arm", "-M", "mps3-an547", "-nographic", "-monitor", "none",
          "-semihosting-config", "enable=on,target=native",
          "-serial", f"tcp:127.0.0.1:{{port}},server=on,wait=on,nodelay=on", "-kernel", elf])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@needs_qemu
def test_the_corstone300_port_boots_on_the_sse300_through_an_fvp_session(corstone300_elf, tmp_path):
    assert firmware.memory_figures(corstone300_elf)["flash_breakdown"]["model"] == 0
    session = FvpSession(str(_fake_fvp(tmp_path)), corstone300_elf, macs=128, timeout_s=5)
    try:
        assert session.boot_lines[2:] == ["m-init-done"]
        assert session.link.command("name") == ["m-name-dut-[udc-harness corstone300]"]
        session.link.load_input(b"\x00" * 8)
        with pytest.raises(ProtocolError, match="'infer' failed on the target: no model in this firmware"):
            session.link.infer(1, 0)
    finally:
        session.close()
    assert session.process.poll() is not None  # the stand-in and its QEMU are gone


def test_fvp_command_maps_the_accelerator_to_num_macs_and_drives_uart0_raw(tmp_path):
    target = Corstone300Target(accelerator="ethos-u55-64")
    assert target.settings()["num_macs"] == 64
    command = fvp_command(FVP, tmp_path / "fw.elf", target.macs)
    assert command[:3] == [FVP, "-a", str(tmp_path / "fw.elf")]
    options = {command[i + 1] for i, word in enumerate(command) if word == "-C"}
    assert {"ethosu.num_macs=64", "mps3_board.visualisation.disable-visualisation=1",
            "mps3_board.telnetterminal0.start_telnet=0", "mps3_board.telnetterminal0.mode=raw"} <= options
    assert command[-2:] == ["--timelimit", str(FVP_TIMELIMIT_S)]  # the FVP's own limit, behind ours
    with pytest.raises(UsageError, match="choose one of ethos-u55-32, ethos-u55-64, ethos-u55-128, ethos-u55-256"):
        Corstone300Target(accelerator="ethos-u65-512")


def test_corstone300_compiles_with_every_vela_setting_it_keys_on():
    """Each [vela] setting the target puts into its cache key reaches the compiler, optimise included."""
    target = Corstone300Target(accelerator="ethos-u55-256", system_config="Ethos_U55_Deep_Embedded",
                               memory_mode="Shared_Sram", optimise="Size")
    keyed = {key: value for key, value in target.settings().items() if key in ("system_config", "memory_mode", "optimise")}
    assert keyed == {"system_config": "Ethos_U55_Deep_Embedded", "memory_mode": "Shared_Sram", "optimise": "Size"}
    compiled_with = target.vela_settings.as_dict()
    assert {key: compiled_with[key] for key in keyed} == keyed and compiled_with["accelerator"] == "ethos-u55-256"
    with pytest.raises(UsageError, match="unknown Vela optimise strategy 'Smallest'"):
        Corstone300Target(optimise="Smallest")


def test_corstone300_says_what_is_missing_and_where_it_looks(tmp_path, monkeypatch):
    if firmware.missing_tools():
        pytest.skip(firmware.missing_tools())
    monkeypatch.delenv("FVP_CORSTONE300", raising=False)
    monkeypatch.delenv("ETHOSU_DRIVER", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    reason = Corstone300Target().available()
    assert reason.startswith(f"{FVP} not found (looked at [firmware] fvp, $FVP_CORSTONE300, then PATH)") and "\n" not in reason
    _fake_fvp(tmp_path)
    tflm = tmp_path / "tflm"
    (tflm / "tensorflow" / "lite" / "micro").mkdir(parents=True)
    reason = Corstone300Target(tflm_root=str(tflm)).available()
    assert reason.startswith("no Ethos-U core driver: set [firmware] ethosu_driver or ETHOSU_DRIVER") and "ethos-u-core-driver 9622608a" in reason
    monkeypatch.setenv("ETHOSU_DRIVER", str(tmp_path / "driver"))
    (tmp_path / "driver" / "include").mkdir(parents=True)
    (tmp_path / "driver" / "include" / "ethosu_driver.h").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert Corstone300Target(tflm_root=str(tflm)).available().endswith(
        "build it once with: python -m harness firmware setup --ethos-u")


def test_board_says_what_is_missing_and_builds_the_pyocd_command(tmp_path, monkeypatch):
    if firmware.missing_tools():
        pytest.skip(firmware.missing_tools())
    pytest.importorskip("serial")
    monkeypatch.delenv("UDC_BOARD_PORT", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert BoardTarget(port="/dev/ttyACM0").available() == "pyocd not found on PATH; run: pip install pyocd"
    pyocd = tmp_path / "pyocd"  # stand-in: only its presence on PATH is checked here
    pyocd.write_text("#!/bin/sh\nexit 0\n")
    pyocd.chmod(0o755)
    assert BoardTarget().available() == "no serial port: pass --port /dev/ttyACM0 (or set [board] port in the config, or UDC_BOARD_PORT)"
    missing = str(tmp_path / "ttyACM9")
    assert BoardTarget(port=missing).available().startswith(f"serial port {missing} does not exist")
    board = get_target("board", port="/dev/ttyACM0", probe="0240000034", accelerator="ethos-u55-256")
    assert board.settings()["num_macs"] == 256 and board.tick_key == "cpu_cycles"
    assert pyocd_flash_command(tmp_path / "fw.elf", "cortex_m", "0240000034") == [
        "pyocd", "flash", "--target", "cortex_m", "--uid", "0240000034", str(tmp_path / "fw.elf")]
    assert "--uid" not in pyocd_flash_command(tmp_path / "fw.elf", "cortex_m", None)


def test_measure_on_a_missing_fvp_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch, hand_tflite_file):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("FVP_CORSTONE300", raising=False)
    code = main(["measure", "--tflite", str(hand_tflite_file), "--target", "corstone300", "--out", str(tmp_path)])
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1
    assert "target corstone300 is not usable here" in error and "install" in error


def test_firmware_check_ethos_u_names_the_missing_driver(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ETHOSU_DRIVER", raising=False)
    root = tmp_path / "tflm"
    (root / "tensorflow" / "lite" / "micro").mkdir(parents=True)
    (root / "tensorflow" / "lite" / "micro" / "micro_interpreter.cc").write_text("")
    downloads = root / "tensorflow" / "lite" / "micro" / "tools" / "make" / "downloads"
    for folder in firmware.TFLM_DOWNLOADS:
        (downloads / folder).mkdir(parents=True, exist_ok=True)
        (downloads / folder / "README").write_text("")
    assert main(["firmware", "check", "--tflm-root", str(root), "--ethos-u"]) == 2
    out = capsys.readouterr().out
    assert "--  ethos-u driver" in out and "no Ethos-U core driver: set [firmware] ethosu_driver or ETHOSU_DRIVER" in out
    assert "not built yet: python -m harness firmware setup --ethos-u" in out
    (downloads / "ethos_u_core_driver" / "include").mkdir(parents=True)
    (downloads / "ethos_u_core_driver" / "include" / "ethosu_driver.h").write_text("")
    assert main(["firmware", "check", "--tflm-root", str(root), "--ethos-u"]) == 0
    assert "ok  ethos-u driver" in capsys.readouterr().out


def test_npu_counter_lines_become_the_store_keys_and_their_absence_an_error():
    import socket

    from core.errors import HarnessError
    from targets.benchmark_replies import Inference
    from targets.serial_link import SerialLink

    host, device = socket.socketpair()
    device.sendall(b"m-warmup-start-0\r\nm-warmup-done\r\nm-infer-start-10\r\nm-lap-us-500\r\nm-lap-us-1000\r\n"
                   b"m-instructions-4000\r\n"
                   b"m-npu-active-cycles-86000\r\nm-npu-idle-cycles-1200\r\nm-axi0-read-beats-900\r\n"
                   b"m-axi1-read-beats-1800\r\nm-npu-total-cycles-87200\r\nm-infer-done\r\nm-ready\r\n")
    inference = SerialLink.over_socket(host, 1.0).infer(10, 0)
    assert inference.elapsed_us == 500 and inference.figures == {"instructions": 4000, "npu_active_cycles": 86000, "npu_idle_cycles": 1200,
                       "axi0_read_beats": 900, "axi1_read_beats": 1800, "npu_total_cycles": 87200}
    target = Corstone300Target()
    target._vela_npu_cycles = 86429
    counters = target.platform_counters(inference)
    assert counters["npu_cycles"] == 86000 and counters["vela_npu_cycles"] == 86429
    assert counters["npu_total_cycles"] == 87200 and counters["axi1_read_beats"] == 1800
    with pytest.raises(HarnessError, match="without the NPU counters .*built with the Ethos-U driver"):
        target.platform_counters(Inference({"instructions": 4000}, elapsed_us=500))


def test_the_config_says_where_the_firmware_parts_and_the_board_are(tmp_path, capsys, monkeypatch):
    from harness.config import load_config
    from targets import TARGETS

    for variable in ("TFLM_ROOT", "ETHOSU_DRIVER", "FVP_CORSTONE300", "UDC_BOARD_PORT"):
        monkeypatch.delenv(variable, raising=False)
    fvp = tmp_path / "models" / "my-fvp"
    config = tmp_path / "lab.toml"
    config.write_text(f'[firmware]\ntflm_root = "{tmp_path / "tflm"}"\nethosu_driver = "{tmp_path / "driver"}"\n'
                      f'fvp = "{fvp}"\nkernels = "reference"\n[board]\nport = "/dev/ttyUSB3"\nprobe = "0240"\n')
    settings = load_config(config)
    corstone = get_target("corstone300", **TARGETS["corstone300"].options(settings))
    assert corstone.fvp == str(fvp) and corstone.tflm_root == tmp_path / "tflm"
    assert corstone.driver == tmp_path / "driver"
    qemu = get_target("qemu-an547", **TARGETS["qemu-an547"].options(settings))
    assert qemu.kernels == "reference" and qemu.tflm_root == tmp_path / "tflm"
    board = get_target("board", **TARGETS["board"].options(load_config(config, {"board": {"port": "/dev/ttyACM1"}})))
    assert board.port == "/dev/ttyACM1" and board.probe == "0240"  # the command line wins over the file
    # doctor looks where the config says and names each place it looked
    assert main(["doctor", "--config", str(config)]) == 0  # vela works; the rest is listed
    out = capsys.readouterr().out
    assert f"{fvp} missing (corstone300 emulator)" in out and "[firmware] fvp" in out
    assert f"{tmp_path / 'tflm'} is not a directory" in out and f"{tmp_path / 'tflm'} is no TFLM checkout" in out


def test_macs_selects_the_npu_size_and_contradictions_are_refused(tmp_path, capsys, hand_tflite_file):
    arguments = ["measure", "--tflite", str(hand_tflite_file), "--target", "corstone300", "--out", str(tmp_path)]
    assert main(arguments + ["--macs", "64", "--accelerator", "ethos-u55-128"]) == 2
    assert "--macs 64 contradicts --accelerator ethos-u55-128" in capsys.readouterr().err
    assert main(arguments + ["--macs", "48"]) == 2
    assert "invalid choice: 48" in capsys.readouterr().err
    from harness.cli import build_parser
    from harness.commands.common import target_overrides

    args = build_parser().parse_args(arguments + ["--macs", "64"])
    vela = target_overrides(args)["vela"]
    assert get_target("corstone300", **{k: v for k, v in vela.items() if v}).settings()["num_macs"] == 64


def test_unknown_kernels_in_the_config_are_one_line(tmp_path):
    from harness.config import load_config

    config = tmp_path / "bad.toml"
    config.write_text('[firmware]\nkernels = "cmsis"\n')
    with pytest.raises(UsageError, match="firmware.kernels = 'cmsis'; choose one of cmsis_nn, reference"):
        load_config(config)
