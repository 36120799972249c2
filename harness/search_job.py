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
from harness.cost_providers import providers
from harness.training_cache import cached_pretrain, pretrain_path
from search.strategy import strategy_entry


def search_job(config: dict, strategy: str, limits: dict[str, float], processes: int, out_dir: Path,
               quiet: bool = False) -> tuple[Candidate, Candidate | None, Path]:
    """Search under ``limits`` ({kind: limit}, ``core.budgets``), finetune and write the candidates; return
    (deployed, searched or None, their directory)."""
    from search.strategy.parallel import search_in_processes
    from search.strategy.pretrain import pretrain_state

    entry = strategy_entry(strategy)
    if processes < 1:
        raise UsageError(f"--processes {processes} must be at least 1")
    if processes > 1 and not entry.processes:
        raise UsageError(f"--processes spreads MC samples of a UDC or DNAS search; {strategy} has none")
    run, udc = config["run"], config["udc"]
    dataset = load_dataset(run["dataset"], run["data_path"] or None)
    given = providers(config)
    searcher = entry.create(dataset, limits, entry.settings(config), quiet=quiet, providers=given)
    searcher.pretrained = cached_pretrain(pretrain_path(out_dir, dataset.name, udc),
                                          lambda: pretrain_state(dataset, udc, quiet))
    if processes > 1:
        candidate, searched = search_in_processes(processes, dataset, settings=udc, quiet=quiet,
                                                  vanilla=entry.options.get("vanilla", False),
                                                  pretrained=searcher.pretrained, budgets=limits,
                                                  deployed_figures=given["deployed_figures"],
                                                  weight_encoder=given["weight_encoder"])
    else:
        candidate, searched = searcher.run(), searcher.searched
    directory = out_dir / "search" / candidate.name
    candidate.save(directory / "deployed")
    if searched is not None:
        searched.save(directory / "searched")
    return candidate, searched, directory
