"""Search strategies: how per-layer decisions are made, and the one registry of them.

A strategy sees costs only through ``search.cost`` and networks only through ``search.space``. Every
search strategy implements ``search.strategy.base.Strategy`` (``run()`` returns the finetuned
candidate). ``uniform`` is not a search: it gives every layer the same (bits, nonzero) choice
(``search.strategy.uniform``), and ``finetune`` is the three-stage finetuning they share.

``STRATEGIES`` names each search with what it is, the class that runs it and the config section of its
own settings. This module imports no torch: the CLI lists and checks strategies without loading one;
``create`` imports the class it is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from core.errors import UsageError


# What every search takes for budgets in measured units (search.strategy.measured, search.flash_cost).
MEASURING = ("deployed_figures", "weight_encoder")


@dataclass(frozen=True)
class StrategyEntry:
    """One search strategy: ``factory`` is ``module:Class``; ``options`` are the class's keyword
    arguments that make this strategy of it (vanilla DNAS is UDC with ``vanilla=True``); ``section`` is
    the config section of its own settings, merged over ``[udc]``; ``processes`` tells whether its
    Monte-Carlo samples can be spread over processes; ``providers`` names the cost providers it needs
    from the caller beyond those every search takes for measured budgets (``MEASURING``): search compiles
    nothing (``search.cost.OperatorCycles`` as ``operator_cycles``)."""

    name: str
    description: str
    factory: str
    section: str | None = None
    options: dict = field(default_factory=dict)
    processes: bool = False
    providers: tuple[str, ...] = ()

    def load(self):
        module, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def settings(self, config: dict) -> dict:
        """The strategy's settings from a loaded config: ``[udc]``, with its own section on top."""
        return {**config["udc"], **(config.get(self.section) or {})}

    def create(self, dataset, budgets: dict | str, settings: dict | None = None, quiet: bool = False,
               pretrained: dict | None = None, providers: dict | None = None):
        """The strategy, ready to ``run()``, under ``budgets`` ({kind: limit} or a text, ``core.budgets``);
        ``providers`` holds the cost providers by name (those this strategy does not need are left out)."""
        given = {name: (providers or {})[name] for name in (*MEASURING, *self.providers) if name in (providers or {})}
        return self.load()(dataset, settings=settings, quiet=quiet, pretrained=pretrained, budgets=budgets,
                           **self.options, **given)


STRATEGIES: dict[str, StrategyEntry] = {entry.name: entry for entry in (
    StrategyEntry("udc", "UDC: joint differentiable search of width, bits, sparsity and depth under a hard budget",
                  "search.strategy.udc:UDCSearch", processes=True),
    StrategyEntry("dnas", "vanilla DNAS: the penalty on the expected size under pi, plain Gumbel-softmax",
                  "search.strategy.udc:UDCSearch", options={"vanilla": True}, processes=True),
    StrategyEntry("random", "random search: configurations drawn under the budget, the best on validation kept",
                  "search.strategy.random_search:RandomSearch"),
    StrategyEntry("zur", "Zur et al.: score-function gradients over sampled configurations (bit operations recorded)",
                  "search.strategy.zur:ZurSearch", section="zur"),
    StrategyEntry("unas", "UNAS: a latency hinge from a per-layer Vela cycle table",
                  "search.strategy.unas:UNASSearch", section="unas", providers=("operator_cycles",)),
    StrategyEntry("neuralscale", "NeuralScale: power-law filter scaling fitted along a pruning descent",
                  "search.strategy.neuralscale:NeuralScaleSearch", section="neuralscale"),
)}
SEARCH_STRATEGIES = tuple(STRATEGIES)


def strategy_entry(name: str) -> StrategyEntry:
    if name not in STRATEGIES:
        raise UsageError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def search_and_finetune(dataset, strategy: str, budgets: dict | str, settings: dict | None = None, quiet: bool = False,
                        pretrained: dict | None = None, providers: dict | None = None):
    """Search a configuration under ``budgets`` ({kind: limit} or a text such as ``flash=38KiB``,
    ``core.budgets``), finetune it and return its candidate. ``settings`` override ``UDC_QUICK``;
    ``pretrained`` (from ``pretrain_state``) skips the pretraining; ``providers``: the cost providers
    (``harness.cost_providers``)."""
    return strategy_entry(strategy).create(dataset, budgets, settings, quiet, pretrained, providers).run()
