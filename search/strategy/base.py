"""``Strategy``: what every search strategy is to its callers (the CLI, ``run``, the ablation).

A strategy is made with the dataset, hard budgets (``core.budgets``: Flash, NPU cycles, SRAM, MACs or the
size bound, with the harness's cost providers for those it measures), its settings (names and defaults in ``search.settings``), ``quiet`` and optionally the
pretrained supernet; ``run()`` searches, finetunes and returns the deployed candidate. After a run,
``searched`` holds the configuration as searched, before finetuning (None where it cannot be emitted).
UDC is the base of the others: vanilla DNAS is one of its settings; random search and the peers
replace the parts of it they do differently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Strategy(ABC):
    strategy: str  # the registry name the strategy writes into its candidates' meta
    pretrained: dict | None  # the pretrained supernet's state, or None to pretrain in run()

    @abstractmethod
    def run(self):
        """Search under the budget, finetune, and return the deployed candidate."""
