"""Where training runs: ``auto`` (the first CUDA GPU when torch sees one, else the CPU), ``cpu`` or
``cuda[:N]``. Pretraining, the searches' networks and finetuning run there; the decisions, their samples,
the relaxed costs and the projection stay on the CPU (a few hundred numbers each, where a GPU's per-call
latency would cost more than it saves), and their tensors cross to the network once a step.

``check`` reads the text without torch (the config loader's check); ``resolve`` picks the device.
"""

from __future__ import annotations

import re

from core.errors import UsageError

DEVICES = "auto, cpu, cuda or cuda:N"


def check(text: str) -> str:
    """``text`` if it names a device (auto, cpu, cuda, cuda:N); else a UsageError naming the forms."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise UsageError(f"unknown device {text!r}; give {DEVICES}")
    return text


def resolve(text: str):
    """The torch.device ``text`` names; a CUDA device torch cannot see is a UsageError saying what it sees."""
    import torch

    check(text)
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(text.split(":")[1]) if ":" in text else 0
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else f"no CUDA device (torch {torch.__version__})"
        raise UsageError(f"--device {text}: torch sees {seen}; give --device cpu or auto")
    return torch.device("cuda", index)


def process_device(text: str, rank: int):
    """The device of process ``rank`` of a search spread over processes: GPU ``rank`` (one GPU a process)
    for ``cuda`` or ``auto`` with GPUs, the CPU otherwise."""
    device = resolve(text)
    if device.type != "cuda":
        return device
    return resolve(f"cuda:{(device.index or 0) + rank}")
