"""The search job: one strategy under one budget, its pretrained supernet cached, its candidates written.

The command (``harness.commands.search``) checks the arguments and prints; this module makes the
strategy from the registry (with the cost providers it needs), runs it in one process or spreads its
Monte-Carlo samples over several, and writes ``<out>/search/<name>/deployed`` (finetuned) and
``searched`` (as searched, where it can be emitted).
"""

from __future__ import annotations

from pathlib import Path

from core.candidate import Candidate
from core.data import load_dataset
from core.errors import UsageError
from harness.cost_providers import PROVIDERS
from harness.training_cache import cached_pretrain, pretrain_path
from search.strategy import strategy_entry


def search_job(config: dict, strategy: str, budget_bytes: float | None, mac_budget: int | None, processes: int,
               out_dir: Path, quiet: bool = False) -> tuple[Candidate, Candidate | None, Path]:
    """Search, finetune and write the candidates; return (deployed, searched or None, their directory)."""
    from search.strategy.parallel import search_in_processes
    from search.strategy.pretrain import pretrain_state

    entry = strategy_entry(strategy)
    if processes < 1:
        raise UsageError(f"--processes {processes} must be at least 1")
    if processes > 1 and not entry.processes:
        raise UsageError(f"--processes spreads MC samples of a UDC or DNAS search; {strategy} has none")
    run, udc = config["run"], config["udc"]
    dataset = load_dataset(run["dataset"], run["data_path"] or None)
    searcher = entry.create(dataset, budget_bytes, mac_budget, entry.settings(config), quiet=quiet, providers=PROVIDERS)
    searcher.pretrained = cached_pretrain(pretrain_path(out_dir, dataset.name, udc),
                                          lambda: pretrain_state(dataset, udc, quiet))
    if processes > 1:
        candidate, searched = search_in_processes(processes, dataset, budget_bytes, mac_budget, udc,
                                                  entry.options.get("vanilla", False), quiet, searcher.pretrained)
    else:
        candidate, searched = searcher.run(), searcher.searched
    directory = out_dir / "search" / candidate.name
    candidate.save(directory / "deployed")
    if searched is not None:
        searched.save(directory / "searched")
    return candidate, searched, directory
