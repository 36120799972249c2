"""The benchmark's replies parsed (docs/protocol.md): ``profile``'s identity and sizes, ``infer``'s two
timestamps, counters and results, in MLPerf Tiny's reference format and ours. Each parser takes the
reply's lines and ``fail(message) -> ProtocolError`` (the link's, which names the target and marks the
link out of step), and raises one line for anything malformed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from core.errors import HarnessError

COUNT = r"([0-9]{1,20})"  # a figure a device prints: a uint64 has at most 20 digits
FLOAT = re.compile(r"[-+]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][-+]?[0-9]{1,3})?")
TIMESTAMP_WRAP = 1 << 32  # the reference prints microseconds as %lu: 32 bits on its devices
# log lines of the reference firmware that mean the input was not taken (th_load_tensor)
INPUT_REFUSED = re.compile(r"^(Input db has|Supplied buffer size)")


class ProtocolError(HarnessError):
    """The target's replies broke the protocol; the message says how."""


@dataclass
class Inference:
    """What one ``infer`` replied."""

    figures: dict[str, int] = field(default_factory=dict)  # our m-<counter>-N lines, per timed inference
    elapsed_us: int | None = None  # T1 - T0 around the timed runs; None without two timestamps
    scores: np.ndarray | None = None  # m-results-[...]: the dequantised outputs (reference format)
    int8: np.ndarray | None = None  # m-results-int8-[...]: the raw outputs (ours)
    log: list[str] = field(default_factory=list)  # the device's unprefixed lines


def parse_profile(lines: list[str], fail) -> dict:
    """``profile``: model id, profile, input format and our three sizes, those the device sent."""
    figures = {}
    for line in lines:
        if re.match(r"m-(input|output|arena)-bytes-", line):
            match = re.fullmatch(r"m-(input|output|arena)-bytes-" + COUNT, line)
            if not match:
                raise fail(f"'profile' replied a malformed size line: {line[:60]!r}")
            figures[f"{match.group(1)}_bytes"] = int(match.group(2))
        elif line.startswith(("m-model-", "m-profile-", "m-input-format-")):
            match = re.fullmatch(r"m-(model|profile|input-format)-\[([^]]*)\]", line)
            if not match:
                raise fail(f"'profile' replied a malformed {line[2:].split('-')[0]} line: {line[:60]!r}")
            figures[match.group(1).replace("-", "_")] = match.group(2)
    return figures


def parse_inference(lines: list[str], log: list[str], fail) -> Inference:
    """``infer``: the two timestamps around the timed runs, the counters, the results."""
    refused = [line for line in log if INPUT_REFUSED.match(line)]
    if refused:
        raise fail(f"'infer': the device did not take the input: {refused[0][:80]!r}")
    reply = Inference(log=list(log))
    stamps = []
    for line in lines:
        if line.startswith("m-lap-us-"):
            match = re.fullmatch(r"m-lap-us-" + COUNT, line)
            if not match:
                raise fail(f"'infer' replied a malformed timestamp: {line[:60]!r}")
            stamps.append(int(match.group(1)))
            continue
        if line.startswith("m-results-"):
            continue
        match = re.fullmatch(r"m-([a-z0-9-]+)-" + COUNT, line)
        if match and not match.group(1).startswith(("warmup", "infer")):
            reply.figures[match.group(1).replace("-", "_")] = int(match.group(2))
        elif line.startswith("m-instructions-"):
            raise fail(f"'infer' replied a malformed count: {line[:60]!r}")
    if len(stamps) >= 2:
        start, end = stamps[-2], stamps[-1]
        if end < start and TIMESTAMP_WRAP // 2 <= start < TIMESTAMP_WRAP:  # a 32-bit microsecond clock wrapped
            # (from the clock's upper half: a window of more than 35 minutes is no wrap but a clock that ran back)
            end += TIMESTAMP_WRAP
        if end < start:
            raise fail(f"'infer' replied timestamps that run backwards: {start} then {end}")
        reply.elapsed_us = end - start
    if any(line.startswith("m-results-") for line in lines):
        reply.scores, reply.int8 = parse_results(lines, "infer", fail)
    return reply


def parse_results(lines: list[str], during: str, fail) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The scores of ``m-results-[...]`` and the int8 values of ``m-results-int8-[...]``; at least one."""
    scores = int8 = None
    for line in lines:
        if line.startswith("m-results-int8-"):
            int8 = _values(line, "m-results-int8-", during, fail, _int8)
        elif line.startswith("m-results-"):
            scores = _values(line, "m-results-", during, fail, _score)
    if scores is None and int8 is None:
        raise fail(f"'{during}' replied without an m-results line")
    if scores is not None and int8 is not None and scores.size != int8.size:
        raise fail(f"'{during}' replied {scores.size} scores but {int8.size} int8 values")
    return (None if scores is None else scores.astype(np.float64),
            None if int8 is None else int8.astype(np.int8))


def _values(line: str, prefix: str, during: str, fail, convert) -> np.ndarray:
    match = re.fullmatch(re.escape(prefix) + r"\[(.*)\]", line)
    if not match:
        raise fail(f"'{during}' replied a malformed line: {line[:60]!r}")
    texts = match.group(1).split(",") if match.group(1) else []
    return np.array([convert(text, during, fail) for text in texts])


def _int8(text: str, during: str, fail) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise fail(f"'{during}' value {text[:20]!r} is not an integer")
    magnitude = text.lstrip("-").lstrip("0") or "0"  # int() of thousands of digits raises
    value = int(magnitude) * (-1 if text.startswith("-") else 1) if len(magnitude) <= 3 else None
    if value is None or not -128 <= value <= 127:
        raise fail(f"'{during}' value {text[:20]} is outside int8's -128..127")
    return value


def _score(text: str, during: str, fail) -> float:
    if not FLOAT.fullmatch(text) or not math.isfinite(float(text)):
        raise fail(f"'{during}' value {text[:20]!r} is not a number")
    return float(text)
