"""Stage 3: the benchmark firmware (firmware/) built with CMake for a platform, and its ELF's sizes.

Builds go under the output directory, one folder per (platform, model) so an unchanged firmware is
not rebuilt. A model larger than the platform's memory region fails at link time and is reported
with the linker's sizes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
TOOLS = {"cmake": "cmake", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi"}
# ELF sections that occupy Flash on the device (code, constants, initial data, the model) and RAM.
FLASH_SECTIONS = {".vectors": "code", ".text": "code", ".ARM.exidx": "code", ".rodata": "rodata", ".data": "data",
                  ".model": "model"}
RAM_SECTIONS = (".data", ".bss", ".heap", ".stack", ".arena")


def missing_tools() -> str | None:
    """None when the firmware can be built here, else what to install."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not absent:
        return None
    packages = " ".join(TOOLS[tool] for tool in absent)
    return f"{', '.join(absent)} not found on PATH; install with: apt-get install {packages}"


def build(build_dir: Path, platform: str = "an547", model_source: Path | None = None, tflm_root: Path | None = None,
          tflm_library: Path | None = None, model_data: Path | None = None) -> Path:
    """Configure and build the firmware for ``platform`` in ``build_dir`` (with ``model_source`` as the
    model side, default none; a TFLM model side also needs the checkout, its library and the generated
    model data); the ELF's path."""
    reason = missing_tools()
    if reason:
        raise HarnessError(f"cannot build firmware: {reason}")
    build_dir.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(FIRMWARE_DIR), "-B", str(build_dir), f"-DPLATFORM={platform}",
                 f"-DCMAKE_TOOLCHAIN_FILE={FIRMWARE_DIR / 'cmake' / 'arm-none-eabi.cmake'}", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DMODEL_SOURCE={model_source or FIRMWARE_DIR / 'core' / 'model_none.c'}"]
    if tflm_root is not None:
        configure += [f"-DTFLM_ROOT={tflm_root}", f"-DTFLM_LIBRARY={tflm_library}", f"-DMODEL_DATA={model_data}"]
    for step in (configure, ["cmake", "--build", str(build_dir), "--parallel", "2"]):
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode:
            raise HarnessError(f"firmware build failed ({platform}): {_build_error(result.stdout + result.stderr)}")
    return build_dir / "benchmark.elf"


def _build_error(output: str) -> str:
    overflow = re.search(r"region `(\w+)' overflowed by (\d+) bytes", output)
    if overflow:
        return (f"the image does not fit the {overflow.group(1)} region: {overflow.group(2)} bytes too many; "
                "use a smaller model or a platform with more memory")
    lines = output.splitlines()
    # the first undefined symbol or compiler error says more than the linker's closing summary
    errors = [line for line in lines if "undefined reference" in line or "error:" in line and "collect2" not in line]
    errors += [line for line in lines if "error" in line.lower()]
    return (errors or output.strip().splitlines() or ["no output"])[0].strip()[:300]


def section_sizes(elf: Path) -> dict[str, int]:
    """Bytes per allocated section of ``elf`` (arm-none-eabi-size -A)."""
    result = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def memory_figures(elf: Path) -> dict:
    """flash_bytes with its breakdown (code, rodata, data, model) and ram_bytes, from the linked ELF."""
    sizes = section_sizes(elf)
    breakdown: dict[str, int] = {}
    for section, part in FLASH_SECTIONS.items():
        breakdown[part] = breakdown.get(part, 0) + sizes.get(section, 0)
    return {"flash_bytes": sum(breakdown.values()), "flash_breakdown": breakdown,
            "ram_bytes": sum(sizes.get(section, 0) for section in RAM_SECTIONS)}
