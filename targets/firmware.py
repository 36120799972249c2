"""The firmware build driver: the benchmark firmware (firmware/) built with CMake for a platform, and its ELF's sizes.

Builds go under the output directory, one folder per (platform, model, the model's op list, model id,
baud rate) so an unchanged firmware is not rebuilt and a changed setting never reuses an image. A model
larger than the platform's memory region fails at link time and is reported with the linker's sizes.
Every tool runs with a timeout (``STEP_TIMEOUTS_S``); one that runs past it is killed and is one
HarnessError line naming the step.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import HarnessError
from targets.op_resolver import operators_key, write_op_resolver
from targets.processes import run_step

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
TOOLS = {"cmake": "cmake", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi"}
# ELF sections that occupy Flash on the device (code, constants, initial data, the model) and RAM.
FLASH_SECTIONS = {".vectors": "code", ".text": "code", ".ARM.exidx": "code", ".rodata": "rodata", ".data": "data",
                  ".model": "model"}
RAM_SECTIONS = (".data", ".bss", ".heap", ".stack", ".arena")
# seconds each external step may take before it is killed (2 cores shared with other jobs, generously)
STEP_TIMEOUTS_S = {"cmake configure": 300.0, "cmake build": 900.0, "arm-none-eabi-size": 60.0,
                   "TFLM library build": 3 * 3600.0}


def missing_tools() -> str | None:
    """None when the firmware can be built here, else what to install."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not absent:
        return None
    packages = " ".join(TOOLS[tool] for tool in absent)
    return f"{', '.join(absent)} not found on PATH; install with: apt-get install {packages}"


def tool_version(command: list[str]) -> str:
    """The first line a tool prints for its version, or "unknown"."""
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return output[0].strip() if output else "unknown"


def build(build_dir: Path, platform: str = "an547", model_source: Path | None = None, tflm_root: Path | None = None,
          tflm_library: Path | None = None, model_data: Path | None = None, ethosu_driver: Path | None = None,
          model_id: str = "ic01", baud: int = 115200, model_slot: int | None = None) -> Path:
    """Configure and build the firmware for ``platform`` in ``build_dir`` (with ``model_source`` as the
    model side, default none; a TFLM model side also needs the checkout, its library and the generated
    model data; corstone300's NPU needs ``ethosu_driver``), announcing MLPerf Tiny model id ``model_id``
    (which decides its input format, docs/protocol.md) with its UART at ``baud``; with ``model_slot`` the
    model is read at run time from that address (``targets.runtime_image``); the ELF's path."""
    reason = missing_tools()
    if reason:
        raise HarnessError(f"cannot build firmware: {reason}")
    build_dir.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(FIRMWARE_DIR), "-B", str(build_dir), f"-DPLATFORM={platform}",
                 f"-DCMAKE_TOOLCHAIN_FILE={FIRMWARE_DIR / 'cmake' / 'arm-none-eabi.cmake'}", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DMODEL_SOURCE={model_source or FIRMWARE_DIR / 'core' / 'model_none.c'}",
                 f"-DUDC_MODEL_ID={model_id}", f"-DUDC_BAUD={baud}",
                 f"-DMODEL_SLOT_ADDRESS={'' if model_slot is None else hex(model_slot)}"]
    if tflm_root is not None:
        configure += [f"-DTFLM_ROOT={tflm_root}", f"-DTFLM_LIBRARY={tflm_library}", f"-DMODEL_DATA={model_data}"]
    if ethosu_driver is not None:
        configure += [f"-DETHOSU_DRIVER={ethosu_driver}"]
    for step, command in (("cmake configure", configure),
                          ("cmake build", ["cmake", "--build", str(build_dir), "--parallel", "2"])):
        result = run_step(command, f"firmware build ({platform}): {step}", STEP_TIMEOUTS_S[step])
        if result.returncode:
            raise HarnessError(f"firmware build failed ({platform}): {_build_error(result.stdout + result.stderr)}")
    return build_dir / "benchmark.elf"


def build_model_image(model_dir: Path, platform: str, tflite: bytes, label: str, arena_bytes: int,
                      operators: list[str], tflm_root: Path, tflm_library: Path | None,
                      ethosu_driver: Path | None = None, model_id: str = "ic01", baud: int = 115200) -> Path:
    """The firmware with TFLM and ``tflite`` embedded: model_data.c/.h and the op resolver for ``operators``
    (model_ops.h) written into ``model_dir``, built in a folder keyed by the op list, ``model_id`` and
    ``baud``; the ELF's path."""
    from targets.model_source import write_model_source

    data = write_model_source(model_dir, tflite, label, arena_bytes)
    write_op_resolver(model_dir, operators)
    return build(image_build_dir(model_dir, operators, model_id, baud), platform,
                 model_source=FIRMWARE_DIR / "core" / "model_tflm.cc", tflm_root=tflm_root, tflm_library=tflm_library,
                 model_data=data, ethosu_driver=ethosu_driver, model_id=model_id, baud=baud)


def image_build_dir(model_dir: Path, operators: list[str], model_id: str = "ic01", baud: int = 115200) -> Path:
    """The build folder of a model's image: one per (op list, model id, baud rate), so an image is never
    reused for another."""
    return model_dir / f"build-{operators_key(operators)}-{model_id}-{baud}"


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
    step = "arm-none-eabi-size"
    result = run_step([step, "-A", str(elf)], step, STEP_TIMEOUTS_S[step])
    if result.returncode:
        last = (result.stderr or result.stdout).strip().splitlines() or [f"exit status {result.returncode}"]
        raise HarnessError(f"arm-none-eabi-size cannot read {elf}: {last[-1][:200]}")
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


# ---------------------------------------------------------------- TFLM checkout and its library

# downloads/ folder -> what TFLM (at commit 90b983c2) pins there
TFLM_DOWNLOADS = {
    "gemmlowp": "gemmlowp 719139ce",
    "ruy": "ruy d3712831",
    "flatbuffers": "flatbuffers v25.9.23 with tools/make/flatbuffers.patch applied",
    "kissfft": "kissfft v130 with third_party/kissfft/kissfft.patch applied",
    "pigweed": "pigweed 47268dff with tools/make/pigweed.patch applied, BUILD files removed",
    "cmsis": "CMSIS_6 5782d6f8",
    "cmsis/Cortex_DFP": "Cortex_DFP c2c70a97",
    "cmsis_nn": "CMSIS-NN 4ab83cc3",
}
KERNELS = {"cmsis_nn": "OPTIMIZED_KERNEL_DIR=cmsis_nn", "reference": ""}
# TFLM's optimised build that keeps its error strings (MicroPrintf), so the firmware can say why a model
# failed to set up; "release" strips them (TFLM's Makefile: the latencies of the two are close).
TFLM_BUILD_TYPE = "release_with_logs"
# TFLM's optimisation levels, plus -fno-if-conversion2: GCC 12 then emits no IT-predicated VCVT, which
# binutils before 2.41 misreads under MVE as VCVTN ("syntax error -- `vcvtne.f32.s32'", in
# kernels/resize_nearest_neighbor.cc of this build type; binutils commit 656412a7 fixes the assembler).
TFLM_MAKE_FLAGS = ("CORE_OPTIMIZATION_LEVEL=-Os -fno-if-conversion2",
                   "KERNEL_OPTIMIZATION_LEVEL=-O2 -fno-if-conversion2",
                   "THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL=-O2 -fno-if-conversion2")
# The Ethos-U core driver TFLM pins (tools/make/ethos_u_core_driver_download.sh), for corstone300 builds.
ETHOSU_DRIVER_PIN = "ethos-u-core-driver 9622608a (gitlab.arm.com/artificial-intelligence/ethos-u/ethos-u-core-driver)"


def tflm_checkout(given: str | Path | None = None) -> Path | None:
    """The TFLM checkout: ``given`` (an option or a config's [firmware] tflm_root), else $TFLM_ROOT, else None."""
    root = given or os.environ.get("TFLM_ROOT", "")
    return Path(root).expanduser() if root else None


def check_tflm(root: Path) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) for a TFLM checkout: the sources and every pinned download."""
    rows = [("checkout", (root / "tensorflow" / "lite" / "micro" / "micro_interpreter.cc").is_file(),
             str(root) if root.is_dir() else f"{root} does not exist")]
    downloads = root / "tensorflow" / "lite" / "micro" / "tools" / "make" / "downloads"
    for folder, pinned in TFLM_DOWNLOADS.items():
        present = (downloads / folder).is_dir() and any((downloads / folder).iterdir())
        rows.append((f"downloads/{folder}", present, pinned if present else f"missing: put {pinned} in {downloads / folder}"))
    return rows


def missing_tflm_checkout(root: Path | None) -> str | None:
    """None when ``root`` holds TFLM's sources, else one line naming where the harness looked."""
    if root is None:
        return ("no TFLM checkout: set TFLM_ROOT (or [firmware] tflm_root in the config) to a tflite-micro checkout "
                "with its downloads/ populated (README: 'TFLM for the firmware targets')")
    if not (root / "tensorflow" / "lite" / "micro").is_dir():
        return (f"{root} is no TFLM checkout (no tensorflow/lite/micro); point TFLM_ROOT or [firmware] tflm_root at "
                "a tflite-micro checkout (README: 'TFLM for the firmware targets')")
    return None


def check_ethosu_driver(driver: Path | None) -> str | None:
    """None when ``driver`` is an Ethos-U core driver checkout, else what is missing and where to put it."""
    if driver is None:
        return (f"no Ethos-U core driver: set [firmware] ethosu_driver or ETHOSU_DRIVER to a checkout of "
                f"{ETHOSU_DRIVER_PIN}, or put it in TFLM's tools/make/downloads/ethos_u_core_driver")
    if not (driver / "include" / "ethosu_driver.h").is_file():
        return f"{driver} is no Ethos-U core driver checkout (no include/ethosu_driver.h); get {ETHOSU_DRIVER_PIN}"
    return None


def find_ethosu_driver(tflm_root: Path | None, driver: str | None = None) -> Path | None:
    """The driver checkout: ``driver``, else $ETHOSU_DRIVER, else the one in TFLM's downloads/."""
    given = driver or os.environ.get("ETHOSU_DRIVER")
    if given:
        return Path(given).expanduser()
    if tflm_root is not None:
        downloaded = tflm_root / "tensorflow/lite/micro/tools/make/downloads/ethos_u_core_driver"
        if downloaded.is_dir():
            return downloaded
    return None


# What decides TFLM's library: its sources and build files (the pinned downloads follow from the build files).
TFLM_SOURCE_SUFFIXES = {".c", ".cc", ".h", ".inc", ".sh", ".patch", ".mk"}


@functools.lru_cache(maxsize=8)
def tflm_fingerprint(root: Path) -> str:
    """A hash of the checkout's TFLM sources and build files: the same TFLM commit, wherever it is checked
    out, shares one library; a local edit gets its own. About 1,300 files, well under a second."""
    digest = hashlib.sha256()
    micro = root / "tensorflow" / "lite" / "micro"
    for path in sorted(micro.rglob("*")):
        relative = path.relative_to(micro)
        if relative.parts[:3] == ("tools", "make", "downloads") or relative.parts[:1] == ("gen",):
            continue
        if path.is_file() and (path.suffix in TFLM_SOURCE_SUFFIXES or path.name == "Makefile"):
            digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def tflm_cache(root: Path, kernels: str, coprocessor: str | None = None) -> Path:
    """Where the harness keeps the library built from ``root`` with ``kernels``: one per (TFLM sources, flags)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "udc-harness" / "tflm"
    flags = f"{kernels}|{coprocessor}" if coprocessor else kernels
    fingerprint = f"{tflm_fingerprint(root.resolve())}|cortex-m55|{TFLM_BUILD_TYPE}|{'|'.join(TFLM_MAKE_FLAGS)}|{flags}"
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    return base / f"{kernels}{'-' + coprocessor if coprocessor else ''}-{key}"


def find_tflm_library(root: Path, kernels: str = "cmsis_nn", coprocessor: str | None = None) -> Path | None:
    """The Cortex-M55 library for ``kernels`` (and ``coprocessor``, e.g. ethos_u): the harness's cache first,
    then the checkout's own gen/."""
    suffix = ("_cmsis_nn" if kernels == "cmsis_nn" else "") + (f"_{coprocessor}" if coprocessor else "")
    for base in (tflm_cache(root, kernels, coprocessor), root / "gen"):
        for folder in (f"cortex_m_generic_cortex-m55_{TFLM_BUILD_TYPE}{suffix}_gcc",
                       f"cortex_m_generic_cortex-m55_{TFLM_BUILD_TYPE}{suffix}"):
            library = base / folder / "lib" / "libtensorflow-microlite.a"
            if library.is_file():
                return library
    return None


def build_tflm(root: Path, kernels: str = "cmsis_nn", ethosu_driver: Path | None = None) -> Path:
    """Build TFLM's library for the Cortex-M55 into the harness cache once (minutes); its path. With
    ``ethosu_driver`` the library also holds TFLM's ethos-u operator and the driver (corstone300)."""
    coprocessor = "ethos_u" if ethosu_driver is not None else None
    existing = find_tflm_library(root, kernels, coprocessor)
    if existing is not None:
        return existing
    missing = [detail for _, ok, detail in check_tflm(root) if not ok]
    if coprocessor:
        missing += [reason for reason in [check_ethosu_driver(ethosu_driver)] if reason]
    if missing:
        raise HarnessError(f"TFLM checkout incomplete: {missing[0]} (run 'python -m harness firmware check')")
    command = ["nice", "make", "-f", "tensorflow/lite/micro/tools/make/Makefile", "TARGET=cortex_m_generic",
               "TARGET_ARCH=cortex-m55", "TARGET_TOOLCHAIN_ROOT=/usr/bin/", f"BUILD_TYPE={TFLM_BUILD_TYPE}",
               f"BASE_GENDIR={tflm_cache(root, kernels, coprocessor)}", f"-j{min(2, os.cpu_count() or 1)}", "microlite"]
    command += [*TFLM_MAKE_FLAGS, *([KERNELS[kernels]] if KERNELS[kernels] else [])]
    if coprocessor:
        command += ["CO_PROCESSOR=ethos_u", "ETHOSU_ARCH=u55", f"ETHOSU_DRIVER_PATH={ethosu_driver}"]
    # TFLM's build scripts need numpy and Pillow: put this interpreter's environment first on PATH
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    result = run_step(command, "TFLM library build (make)", STEP_TIMEOUTS_S["TFLM library build"], cwd=root,
                      env=environment)
    library = find_tflm_library(root, kernels, coprocessor)
    if result.returncode or library is None:
        raise HarnessError(f"TFLM library build failed: {_build_error(result.stdout + result.stderr)}")
    return library
