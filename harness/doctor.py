"""What this machine can do: packages, datasets and targets, each with its status and fix."""

from __future__ import annotations

import os
import shutil

from harness.data import FASHION_MNIST_DEFAULT
from harness.provenance import package_version
from targets import TARGETS, get_target

PACKAGES = (
    ("tensorflow", ("tensorflow-cpu", "tensorflow"), "TFLite conversion"),
    ("vela", ("ethos-u-vela",), "Ethos-U compiler"),
    ("tflite-micro", ("tflite-micro",), "host TFLM interpreter"),
    ("torch", ("torch",), "search and training"),
    ("constriction", ("constriction",), "range coder for coded_mask_bytes"),
    ("sqlalchemy", ("sqlalchemy",), "measurement store"),
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


def checks() -> list[tuple[str, bool, str]]:
    rows = []
    for label, distributions, purpose in PACKAGES:
        found = package_version(distributions)
        rows.append((f"package {label}", found is not None,
                     f"{found} ({purpose})" if found else f"missing ({purpose}); pip install {distributions[0]}"))
    for tool, packages, purpose in TOOLS:
        path = shutil.which(tool)
        rows.append((f"tool {tool}", path is not None, f"{path} ({purpose})" if path
                     else f"missing ({purpose}); apt-get install {packages}"))
    tflm = os.environ.get("TFLM_ROOT")
    rows.append(("checkout TFLM (TFLM_ROOT)", bool(tflm) and os.path.isdir(tflm),
                 tflm if tflm and os.path.isdir(tflm) else "not set; export TFLM_ROOT=/path/to/tflite-micro "
                 "(README: TFLM for the firmware targets)"))
    fashion = all((FASHION_MNIST_DEFAULT / f"{stem}.gz").is_file() for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
    rows.append(("dataset fashion-mnist", fashion, str(FASHION_MNIST_DEFAULT) if fashion
                 else "missing; sudo apt-get install dataset-fashion-mnist (or pass --data-path DIR)"))
    for name, description in TARGETS.items():
        reason = get_target(name).available()
        rows.append((f"target {name}", reason is None, description if reason is None else reason))
    return rows

