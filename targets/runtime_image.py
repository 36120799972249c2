"""A firmware built once and many models run on it: the image is built per (platform, TFLM library, op
set, model id, baud rate, firmware sources) into a shared cache, and each model is put into its slot
(``MODEL_SLOT_ADDRESS``, the start of the platform's DDR region) before the firmware starts, as a
16-byte header (``UDCM``, the model's length) and the model: QEMU's ``-device loader``, the FVP's
``--data file@address``. No compile and no link per model.

Flash is the run-time firmware's code, read-only and initial data plus the model's bytes: what a
device running this firmware holds (the slot's 16-byte header aside); RAM is the image's with the
model's own arena in place of the run-time image's (``memory_figures``). Against the same model linked
into the firmware this is 444 bytes more on an547 with GCC 12.2 at -O2 (the slot check, 'db slot' and
their messages, less the 4-byte length a linked model keeps); ``tests/test_runtime_image.py`` bounds
the difference at ``LINKED_DIFFERENCE_BYTES``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
from pathlib import Path

from targets import firmware
from targets.op_resolver import operators_key, write_op_resolver

MODEL_SLOT_ADDRESS = 0x70000000  # DDR's origin in firmware/platform/sse300/sse300.ld: the .model section's place
MAGIC = b"UDCM"
HEADER_BYTES = 16
RUNTIME_ARENA_BYTES = 3 * 1024 * 1024  # most of the SSE-300's 4 MB SRAM: room for any model that fits there
LINKED_DIFFERENCE_BYTES = 512  # at most this much Flash above the same model linked in


IMAGES_SLOT_ADDRESS = MODEL_SLOT_ADDRESS + 0x800000  # benchmark.c's image slot: 8 MB above the model's
IMAGES_SLOT_BYTES = 0x800000  # up to the end of the 16 MB DDR region
IMAGES_MAGIC = b"UDCI"


def images_blob(inputs) -> bytes:
    """What the host puts into the image slot: ``UDCI``, the count and bytes of each int8 input, then the
    inputs; the firmware's ``db slot I`` loads input I without a transfer."""
    import numpy as np

    data = np.ascontiguousarray(inputs, dtype=np.int8)
    size = int(np.prod(data.shape[1:]))
    return IMAGES_MAGIC + struct.pack("<II", len(data), size) + bytes(4) + data.tobytes()


def images_per_slot(input_bytes: int) -> int:
    """How many inputs of ``input_bytes`` one image slot holds."""
    return max(0, (IMAGES_SLOT_BYTES - HEADER_BYTES) // max(1, input_bytes))


def model_blob(tflite: bytes) -> bytes:
    """What the host puts into the model slot: the header and the model."""
    return MAGIC + struct.pack("<I", len(tflite)) + bytes(HEADER_BYTES - 8) + tflite


def image_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "udc-harness" / "firmware-images"


def firmware_digest() -> str:
    """The firmware's sources, every file under firmware/: an edited source is another image."""
    digest = hashlib.sha256()
    for path in sorted(p for p in firmware.FIRMWARE_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(firmware.FIRMWARE_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_runtime_image(platform: str, operators: list[str], tflm_root: Path, tflm_library: Path, model_id: str,
                        baud: int, ethosu_driver: Path | None = None) -> Path:
    """The ELF of the run-time firmware for ``operators``, built once into the cache (under a lock, so
    processes measuring at once build it once)."""
    library = Path(tflm_library)
    key = json.dumps({"platform": platform, "operators": operators_key(operators), "model_id": model_id,
                      "baud": baud, "library": [str(library.resolve()), library.stat().st_size,
                                                library.stat().st_mtime_ns],
                      "driver": str(ethosu_driver), "firmware": firmware_digest(),
                      "arena": RUNTIME_ARENA_BYTES}, sort_keys=True)
    folder = image_cache() / f"{platform}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    elf = folder / "build" / "benchmark.elf"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not elf.is_file():
            source = _write_runtime_source(folder / "model", operators)
            firmware.build(folder / "build", platform, model_source=firmware.FIRMWARE_DIR / "core" / "model_tflm.cc",
                           tflm_root=tflm_root, tflm_library=library, model_data=source, ethosu_driver=ethosu_driver,
                           model_id=model_id, baud=baud, model_slot=MODEL_SLOT_ADDRESS)
    return elf


def _write_runtime_source(directory: Path, operators: list[str]) -> Path:
    """model_data.h declaring the slot's symbols (the linker places them), an empty model_data.c and the
    op resolver; the .c."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model_data.h").write_text(
        "#pragma once\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
        f"#define MODEL_NAME \"loaded at run time\"\n#define MODEL_ARENA_BYTES {RUNTIME_ARENA_BYTES}\n"
        "extern const unsigned char model_data[];\nextern const unsigned int model_data_len;\n"
        "#ifdef __cplusplus\n}\n#endif\n")
    source = directory / "model_data.c"
    source.write_text("#include \"model_data.h\"  /* model_data and model_data_len: the model slot */\n")
    write_op_resolver(directory, operators)
    return source


def memory_figures(elf: Path, model_bytes: int, arena_bytes: int) -> dict:
    """Flash (with its breakdown: the model's bytes under "model") and RAM of the run-time image ``elf``
    running a model of ``model_bytes`` with an arena of ``arena_bytes``."""
    figures = firmware.memory_figures(elf)
    breakdown = {**figures["flash_breakdown"], "model": model_bytes}
    return {"flash_bytes": sum(breakdown.values()), "flash_breakdown": breakdown,
            "ram_bytes": figures["ram_bytes"] - RUNTIME_ARENA_BYTES + arena_bytes}
