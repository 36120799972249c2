"""A search with its Monte-Carlo samples spread over processes (the UDC paper's Sec. 4: each process runs its
own samples and gradient; the gradients are averaged, so every process takes the same step).

Processes talk through ``torch.distributed``: NCCL when the search runs on GPUs (process i on GPU i of
``device``), gloo on CPUs; the pretraining runs once, before the processes start, and only the first
process finetunes and writes the candidate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from core import candidate as candidate_io
from core.candidate import Candidate
from core.data import Dataset
from core.errors import UsageError
from search.device import process_device
from search.settings import merged_settings
from search.strategy.pretrain import pretrain_state
from search.strategy.udc import UDCSearch


def search_in_processes(processes: int, dataset: Dataset, budget_bytes: float | None = None, macs: int | None = None,
                        settings: dict | None = None, vanilla: bool = False, quiet: bool = False,
                        pretrained: dict | None = None, **options) -> tuple[Candidate, Candidate | None]:
    """The deployed candidate and the searched one (before finetuning; None if it cannot be made); ``options``:
    UDCSearch's budgets and cost providers."""
    merged = merged_settings(settings)
    if processes < 1 or merged["samples"] % processes:
        raise UsageError(f"--processes {processes} must divide the MC samples ({merged['samples']}); "
                         f"set search.samples to a multiple of it")
    process_device(merged["device"], processes - 1)  # a GPU for every process, or one line saying what torch sees
    state = pretrained if pretrained is not None else pretrain_state(dataset, merged, quiet)
    with tempfile.TemporaryDirectory(prefix="udc-processes-") as workdir:
        arguments = (processes, workdir, dataset, budget_bytes, macs, settings, vanilla, quiet, state, options)
        torch.multiprocessing.spawn(_worker, args=arguments, nprocs=processes, join=True)
        searched = Path(workdir) / "searched"
        return (candidate_io.load(Path(workdir) / "candidate"),
                candidate_io.load(searched) if searched.is_dir() else None)


def _worker(rank: int, processes: int, workdir: str, dataset: Dataset, budget_bytes, macs, settings, vanilla, quiet,
            state, options) -> None:
    torch.set_num_threads(1)  # one core per process
    on = process_device(merged_settings(settings)["device"], rank)
    if on.type == "cuda":
        torch.cuda.set_device(on)
    dist.init_process_group("nccl" if on.type == "cuda" else "gloo", init_method=f"file://{workdir}/rendezvous",
                            rank=rank, world_size=processes)
    try:
        search = UDCSearch(dataset, budget_bytes, macs, settings, vanilla=vanilla, quiet=quiet, pretrained=state,
                           **options)
        candidate = search.run()
        if candidate is not None:
            candidate.save(Path(workdir) / "candidate")
            if search.searched is not None:
                search.searched.save(Path(workdir) / "searched")
    finally:
        dist.destroy_process_group()
