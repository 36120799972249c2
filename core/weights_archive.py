"""``weights.npz`` read safely: every member's name, dtype and shape are checked against what the spec
implies from the archive's headers alone, before a byte of it is decompressed, so an archive that
claims gigabytes (or holds Python objects) is refused in one line instead of filling the memory."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from core.errors import UsageError

DTYPES = {"f2", "f4", "f8"}  # float weights; anything else is not a candidate's


def read_weights(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays ``expected`` names (``<layer>.weight``/``.bias`` -> shape), as float32."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{path}: unreadable weights archive ({exc}); regenerate the candidate") from None
    weights: dict[str, np.ndarray] = {}
    with archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        others = [info.filename for info in archive.infolist() if not info.filename.endswith(".npy")]
        unused = sorted(set(members) - set(expected)) + others
        if unused:
            raise UsageError(f"{path}: weights.npz has arrays the spec does not use: {', '.join(unused[:3])}")
        for key, shape in expected.items():
            if key not in members:
                raise UsageError(f"{path}: weights.npz lacks {key} (expected shape {shape})")
            weights[key] = _read_member(path, archive, members[key], key, shape)
    return weights


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
                 shape: tuple[int, ...]) -> np.ndarray:
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(stream)
            stored_shape, fortran, dtype = header
            if dtype.hasobject or dtype.kind + str(dtype.itemsize) not in DTYPES:
                raise UsageError(f"{path}: {key} holds {dtype} values; weights are float16/32/64 arrays")
            if tuple(stored_shape) != shape:
                raise UsageError(f"{path}: {key} has shape {tuple(stored_shape)} but the spec implies {shape}; "
                                 "regenerate weights.npz from the same architecture")
            count = math.prod(shape)
            data = stream.read(count * dtype.itemsize)  # exactly what the checked shape needs, never more
            if len(data) != count * dtype.itemsize:
                raise UsageError(f"{path}: {key} is truncated; regenerate the candidate")
    except UsageError:
        raise
    except Exception as exc:  # zlib, CRC and header errors all mean the same to the user
        raise UsageError(f"{path}: unreadable weights archive ({type(exc).__name__}: {exc}); "
                         "regenerate the candidate") from None
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").astype(np.float32)
    if not np.isfinite(array).all():
        raise UsageError(f"{path}: {key} holds NaN or infinite values; finetune or export the candidate again")
    return array
