"""Search strategies: how per-layer decisions are made. A strategy sees costs only through
``search.cost`` and networks only through ``search.space``.

``uniform``: the same (bits, nonzero) in every layer. ``udc``: the UDC search (and vanilla DNAS as
its setting). ``random_search``: the random-search baseline. ``finetune``: the three-stage
finetuning they share. The seed peers on the same space: ``zur`` (score-function gradient over
configurations, BOPs), ``unas`` (latency hinge from a Vela cost table), ``neuralscale`` (power-law
filter scaling).
"""

from __future__ import annotations

from harness.candidate import Candidate
from harness.data import Dataset
from harness.errors import UsageError
from search.strategy.neuralscale import NEURALSCALE_DEFAULTS, NeuralScaleSearch
from search.strategy.random_search import RandomSearch
from search.strategy.udc import (DNAS_SETTINGS, UDC_FULL, UDC_QUICK, BudgetWarning, UDCSearch, pretrain_key,
                                 pretrain_state)
from search.strategy.unas import UNAS_DEFAULTS, UNASSearch
from search.strategy.uniform import FULL, QUICK, UniformCompression, candidate_name, evaluate
from search.strategy.zur import ZUR_DEFAULTS, ZurSearch

# The seed peers, each a search on the same space, cost and finetuning, with settings of its own.
PEERS = {"zur": ZurSearch, "unas": UNASSearch, "neuralscale": NeuralScaleSearch}
PEER_DEFAULTS = {"zur": ZUR_DEFAULTS, "unas": UNAS_DEFAULTS, "neuralscale": NEURALSCALE_DEFAULTS}
SEARCH_STRATEGIES = ("udc", "dnas", "random", *PEERS)

__all__ = ["FULL", "QUICK", "UDC_FULL", "UDC_QUICK", "DNAS_SETTINGS", "PEERS", "PEER_DEFAULTS", "SEARCH_STRATEGIES",
           "BudgetWarning",
           "RandomSearch", "UDCSearch", "UniformCompression", "candidate_name", "evaluate", "pretrain_key", "pretrain_state",
           "search_and_finetune"]


def search_and_finetune(dataset: Dataset, strategy: str, budget_bytes: float | None = None, macs: int | None = None,
                        settings: dict | None = None, quiet: bool = False, pretrained: dict | None = None) -> Candidate:
    """Search a configuration under the budget (bytes of compressed weights, or MACs), finetune it and
    return its candidate. ``settings`` override ``UDC_QUICK``; "dnas" forces ``DNAS_SETTINGS``;
    ``pretrained`` (from ``pretrain_state``) skips the pretraining."""
    if strategy == "random":
        return RandomSearch(dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained).run()
    if strategy in PEERS:
        return PEERS[strategy](dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained).run()
    if strategy in ("udc", "dnas"):
        return UDCSearch(dataset, budget_bytes, macs, settings, vanilla=strategy == "dnas", quiet=quiet,
                         pretrained=pretrained).run()
    raise UsageError(f"unknown search strategy {strategy!r}; choose one of {', '.join(SEARCH_STRATEGIES)}")
