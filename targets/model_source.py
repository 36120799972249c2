"""The model side of a firmware image: the int8 model as C source (``model_data.c`` with the bytes in
section ``.model``, ``model_data.h`` with its name and arena size), compiled into the firmware."""

from __future__ import annotations

import re
from pathlib import Path


def write_model_source(directory: Path, tflite: bytes, label: str, arena_bytes: int) -> Path:
    """model_data.c (the model bytes in section .model) and model_data.h for the TFLM model side; the .c."""
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:60]
    (directory / "model_data.h").write_text(
        "#pragma once\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
        f"#define MODEL_NAME \"{name}\"\n#define MODEL_ARENA_BYTES {arena_bytes}\n"
        "extern const unsigned char model_data[];\nextern const unsigned int model_data_len;\n"
        "#ifdef __cplusplus\n}\n#endif\n")
    rows = ",\n".join(",".join(str(b) for b in tflite[i:i + 32]) for i in range(0, len(tflite), 32))
    source = directory / "model_data.c"
    source.write_text(
        "#include \"model_data.h\"\n"
        f"__attribute__((section(\".model\"), aligned(16))) const unsigned char model_data[] = {{\n{rows}\n}};\n"
        f"const unsigned int model_data_len = {len(tflite)};\n")
    return source
