"""The one config format (TOML), validated on load; CLI flags override it.

Every key is listed in ``SCHEMA`` with its type; an unknown section or key, or a value of the
wrong type, is a UsageError naming it. ``[search]`` holds the uniform sweep's settings, ``[udc]``
the searches' (every key of ``search.settings.UDC_QUICK``, checked there). Presets (``quick``,
``full``, scaled to CPUs; ``paper``, the UDC paper's recipe) fill the training and evaluation settings the
file leaves out.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

from core.errors import UsageError
from core.budgets import parse_budgets
from results.regress import METRICS
from search.settings import (FULL, PEER_DEFAULTS, QUICK, UDC_FULL, UDC_PAPER, UDC_QUICK, checked_peer_settings,
                             merged_settings)
from search import device
from search.strategy import SEARCH_STRATEGIES

_NUMBER = (int, float)
SCHEMA: dict[str, dict[str, tuple]] = {
    "run": {"target": (str,), "dataset": (str,), "data_path": (str,), "out": (str,), "preset": (str,),
            "strategies": (list, str), "budgets": (list, str), "ablation": (str,), "seeds": (int,)},
    "search": {"supernet": (str,), "bits": (list, int), "nonzero": (list, _NUMBER), "pretrain_epochs": (int,),
               "finetune_steps": (int,), "batch_size": (int,), "finetune_batch_size": (int,), "lr": (_NUMBER,), "finetune_lr": (_NUMBER,),
               "anneal_fraction": (_NUMBER,), "seed": (int,), "device": (str,)},
    "measure": {"eval_samples": (int,), "calibration_samples": (int,), "allow_cpu_ops": (bool,),
                "host_workers": (int,)},
    "vela": {"accelerator": (str,), "system_config": (str,), "memory_mode": (str,), "optimise": (str,)},
    # where the firmware targets find their parts; an empty value falls back to the environment variable
    # (TFLM_ROOT, ETHOSU_DRIVER, FVP_CORSTONE300, UDC_BOARD_PORT, UDC_BOARD_PROBE, UDC_PYOCD_TARGET)
    "firmware": {"tflm_root": (str,), "kernels": (str,), "ethosu_driver": (str,), "fvp": (str,), "model_id": (str,),
                 "baud": (int,), "model_loading": (str,)},
    "board": {"port": (str,), "probe": (str,), "pyocd_target": (str,)},
    # a device flashed with an MLPerf Tiny firmware (docs/protocol.md); runs 0 and warmups -1: the runner's
    "mlperf_dut": {"port": (str,), "baud": (int,), "chunk_bytes": (int,), "windows": (int,), "runs": (int,),
                   "warmups": (int,), "timeout_s": (_NUMBER,)},
    # thresholds of 'regress': relative for sizes and latency, absolute (a fraction) for accuracy
    "regress": {**{metric: (_NUMBER,) for metric in METRICS}, "alpha": (_NUMBER,)},
}

RUN_STRATEGIES = ("uniform", *SEARCH_STRATEGIES)
PEER_SECTIONS = tuple(PEER_DEFAULTS)  # each peer strategy's own settings
ABLATIONS = ("table3",)
DEFAULTS: dict[str, dict] = {
    "run": {"target": "vela", "dataset": "fashion-mnist", "data_path": "", "out": "harness-out", "preset": "quick",
            "strategies": ["uniform", "udc", "random"], "budgets": ["flash=40KiB"], "ablation": "",
            "seeds": 1},
    "search": {"supernet": "mbv2", "bits": [8, 4, 2], "nonzero": [1.0, 0.5, 0.2], "seed": 0},
    "measure": {"calibration_samples": 200, "allow_cpu_ops": False, "host_workers": 0},
    "vela": {},
    "firmware": {"tflm_root": "", "kernels": "cmsis_nn", "ethosu_driver": "", "fvp": "", "model_id": "ic01",
                 "baud": 115200, "model_loading": "run-time"},
    "board": {"port": "", "probe": "", "pyocd_target": ""},
    "mlperf_dut": {"port": "", "baud": 115200, "chunk_bytes": 31, "windows": 5, "runs": 0, "warmups": -1,
                   "timeout_s": 30.0},
    "regress": {"alpha": 0.05},
    "udc": {},
    **{peer: {} for peer in PEER_SECTIONS},
}
FREE_SECTIONS = ("udc", *PEER_SECTIONS)  # keys checked by their owner (search.settings)

# Test images per preset; the training settings of a preset are the strategy's own (search.settings).
PRESETS = {"quick": {"measure": {"eval_samples": 2000}}, "full": {"measure": {"eval_samples": 0}},
           "paper": {"measure": {"eval_samples": 0}}}
# The uniform sweep's training and the searches' settings per preset: quick and full are scaled to CPUs,
# paper is the UDC paper's recipe (search.settings.UDC_PAPER).
SWEEP_SETTINGS = {"quick": QUICK, "full": FULL, "paper": FULL}
SEARCH_SETTINGS = {"quick": UDC_QUICK, "full": UDC_FULL, "paper": UDC_PAPER}


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults <- preset <- file <- overrides (``{"section": {"key": value}}``, None values ignored)."""
    from_file = _read(Path(path)) if path else {}
    overrides = {section: {k: v for k, v in values.items() if v is not None}
                 for section, values in (overrides or {}).items()}
    _check(overrides, "command line")
    preset = overrides.get("run", {}).get("preset") or from_file.get("run", {}).get("preset") or DEFAULTS["run"]["preset"]
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = copy.deepcopy(DEFAULTS)
    config["search"].update(SWEEP_SETTINGS[preset])
    for layer in (PRESETS[preset], from_file, overrides):
        for section, values in layer.items():
            config[section].update(values)
    try:
        device.check(config["search"]["device"])
    except UsageError as error:
        raise UsageError(f"{path or 'command line'}: [search] {error}") from None
    udc = {"supernet": config["search"]["supernet"], "seed": config["search"]["seed"],
           "device": config["search"]["device"], **config["udc"]}
    section = "udc"
    try:
        config["udc"] = merged_settings(udc, SEARCH_SETTINGS[preset])
        for peer in PEER_SECTIONS:
            section = peer
            config[peer] = checked_peer_settings(peer, config[peer])
    except UsageError as error:
        raise UsageError(f"{path or 'command line'}: [{section}] {error}") from None
    _check_run(config["run"])
    _check_firmware(config["firmware"])
    if not 0 <= config["measure"]["host_workers"] <= 64:
        raise UsageError(f"measure.host_workers = {config['measure']['host_workers']}; give 1 to 64 processes, or 0 "
                         "for one per core")
    return config


KERNELS = ("cmsis_nn", "reference")
UART_CLOCK_HZ = 25_000_000  # the SSE-300 UART's clock (firmware/platform/sse300/sse300.c)
BAUD_RANGE = (1200, 2_000_000)


def _check_firmware(firmware: dict) -> None:
    if firmware["model_loading"] not in ("run-time", "linked"):
        raise UsageError(f"firmware.model_loading = {firmware['model_loading']!r}; choose run-time (one firmware, the "
                         "model put into memory) or linked (the model linked into a firmware per model)")
    if firmware["kernels"] not in KERNELS:
        raise UsageError(f"firmware.kernels = {firmware['kernels']!r}; choose one of {', '.join(KERNELS)}")
    if not re.fullmatch(r"[a-z0-9_]{1,20}", firmware["model_id"]):
        raise UsageError(f"firmware.model_id = {firmware['model_id']!r}: give 1-20 characters of a-z, 0-9 and _ "
                         "(an MLPerf Tiny id: ic01, vww01, kws01, ad01)")
    baud = firmware["baud"]
    if not BAUD_RANGE[0] <= baud <= BAUD_RANGE[1] or UART_CLOCK_HZ // baud < 16:
        raise UsageError(f"firmware.baud = {baud}: give a rate from {BAUD_RANGE[0]} to {BAUD_RANGE[1]} that the UART's "
                         f"{UART_CLOCK_HZ // 1_000_000} MHz clock can divide by at least 16 (at most "
                         f"{UART_CLOCK_HZ // 16})")


def _check_run(run: dict) -> None:
    unknown = [s for s in run["strategies"] if s not in RUN_STRATEGIES]
    if unknown:
        raise UsageError(f"unknown strategy {unknown[0]!r} in run.strategies; choose from {', '.join(RUN_STRATEGIES)}")
    if run["ablation"] and run["ablation"] not in ABLATIONS:
        raise UsageError(f"unknown ablation {run['ablation']!r}; choose one of {', '.join(ABLATIONS)}")
    for budget in run["budgets"]:
        parse_budgets(budget)
    if run["seeds"] < 1:
        raise UsageError(f"run.seeds = {run['seeds']}: give at least 1 seed")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; pass the path of a TOML file")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML ({exc}); fix the syntax") from None
    _check(data, str(path))
    return data


def _check(data: dict, where: str) -> None:
    for section, values in data.items():
        if section not in SCHEMA and section not in FREE_SECTIONS:
            raise UsageError(f"{where}: unknown section [{section}]; known sections: "
                             f"{', '.join([*SCHEMA, *FREE_SECTIONS])}")
        if not isinstance(values, dict):
            raise UsageError(f"{where}: [{section}] must be a table of keys")
        if section in FREE_SECTIONS:
            continue
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise UsageError(f"{where}: unknown key {section}.{key}; known keys: {', '.join(SCHEMA[section])}")
            expected = SCHEMA[section][key]
            if not _matches(value, expected):
                raise UsageError(f"{where}: {section}.{key} = {value!r} has the wrong type; expected {_describe(expected)}")


def _matches(value, expected: tuple) -> bool:
    if expected[0] is list:
        return isinstance(value, list) and bool(value) and all(_is(item, expected[1]) for item in value)
    return _is(value, expected[0])


def _is(value, kind) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False  # TOML true is not a number here
    return isinstance(value, kind)


def _describe(expected: tuple) -> str:
    def name(kind):
        return "number" if kind == _NUMBER else kind.__name__

    return f"a non-empty list of {name(expected[1])}" if expected[0] is list else name(expected[0])
