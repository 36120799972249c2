"""What this machine can do: packages, datasets and targets, each with its status and fix."""

from __future__ import annotations

import os
import shutil

from core.data import FASHION_MNIST_DEFAULT
from harness.provenance import package_version
from targets import TARGETS, get_target
from targets.corstone300 import FVP
from targets.firmware import check_ethosu_driver, find_ethosu_driver, tflm_checkout

PACKAGES = (
    ("tensorflow", ("tensorflow-cpu", "tensorflow"), "TFLite conversion"),
    ("vela", ("ethos-u-vela",), "Ethos-U compiler"),
    ("tflite-micro", ("tflite-micro",), "host TFLM interpreter"),
    ("torch", ("torch",), "search and training"),
    ("constriction", ("constriction",), "range coder for coded_mask_bytes"),
    ("sqlalchemy", ("sqlalchemy",), "measurement store"),
    ("alembic", ("alembic",), "store schema migrations"),
    ("matplotlib", ("matplotlib",), "report plots"),
    ("scipy", ("scipy",), "regress statistics"),
    ("psycopg", ("psycopg",), "PostgreSQL shared store (optional)"),
)
TOOLS = (
    ("cmake", "cmake", "firmware build"),
    ("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi", "firmware cross compiler"),
    ("arm-none-eabi-g++", "libstdc++-arm-none-eabi-newlib", "TFLM firmware (C++)"),
    ("qemu-system-arm", "qemu-system-arm", "qemu-an547 emulator"),
)


def checks(config: dict | None = None) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) per package, tool, checkout, dataset and target; ``config`` adds its [firmware] and
    [board] places to the environment's."""
    rows = []
    for label, distributions, purpose in PACKAGES:
        found = package_version(distributions)
        rows.append((f"package {label}", found is not None,
                     f"{found} ({purpose})" if found else f"missing ({purpose}); pip install {distributions[0]}"))
    for tool, packages, purpose in TOOLS:
        path = shutil.which(tool)
        rows.append((f"tool {tool}", path is not None, f"{path} ({purpose})" if path
                     else f"missing ({purpose}); apt-get install {packages}"))
    firmware = (config or {}).get("firmware", {})
    tflm = tflm_checkout(firmware.get("tflm_root") or None)
    rows.append(("checkout TFLM ([firmware] tflm_root, TFLM_ROOT)", tflm is not None and tflm.is_dir(),
                 str(tflm) if tflm is not None and tflm.is_dir() else
                 (f"{tflm} is not a directory" if tflm else "not set") + "; export TFLM_ROOT=/path/to/tflite-micro "
                 "(README: TFLM for the firmware targets)"))
    driver = find_ethosu_driver(tflm, firmware.get("ethosu_driver") or None)
    missing = check_ethosu_driver(driver)
    rows.append(("checkout Ethos-U driver ([firmware] ethosu_driver, ETHOSU_DRIVER)", missing is None,
                 f"{driver} (corstone300, board)" if missing is None else f"{missing} (corstone300, board)"))
    fvp = firmware.get("fvp") or os.environ.get("FVP_CORSTONE300") or FVP
    rows.append((f"tool {FVP}", shutil.which(fvp) is not None,
                 f"{shutil.which(fvp)} (corstone300 emulator)" if shutil.which(fvp) else
                 f"{fvp} missing (corstone300 emulator); install Arm's Corstone-300 Ecosystem FVP from "
                 "developer.arm.com, then put it on PATH, at $FVP_CORSTONE300 or in [firmware] fvp"))
    pyocd = shutil.which("pyocd")
    rows.append(("tool pyocd", pyocd is not None, f"{pyocd} (board flashing)" if pyocd
                 else "missing (board flashing); pip install pyocd"))
    fashion = all((FASHION_MNIST_DEFAULT / f"{stem}.gz").is_file() for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
    rows.append(("dataset fashion-mnist", fashion, str(FASHION_MNIST_DEFAULT) if fashion
                 else "missing; sudo apt-get install dataset-fashion-mnist (or pass --data-path DIR)"))
    for name, entry in TARGETS.items():
        reason = get_target(name, **(entry.options(config) if config else {})).available()
        rows.append((f"target {name}", reason is None, entry.description if reason is None else reason))
    return rows

