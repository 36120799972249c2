"""Random search baseline (the UDC paper's Sec. 6.1, Fig. 5): sample configurations that meet the budget,
finetune each briefly, keep the one with the best held-out accuracy. The trials together get the
training steps of one UDC search, and the winner is finetuned as UDC's result is, so both spend
comparable compute.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from core.candidate import Candidate
from core.data import Dataset
from search.decisions import DecisionSpace
from search.space import GraphNet
from search.strategy.budget import Budget, cheaper, draw_configuration, next_option, select_configuration
from search.strategy.emit import budget_meta, searched_candidate
from search.strategy.finetune import finetune
from search.strategy.udc import UDCSearch
from search.strategy.uniform import evaluate, held_out


def random_configuration(model: GraphNet, budget: Budget, rng: np.random.Generator) -> dict:
    """A configuration drawn uniformly per decision (width groups and blocks as in UDC); while it is
    over the budget, a random decision moves to a strictly cheaper option (``budget.cheaper``); then, in
    random order, decisions move one option up while it still fits. So it lands just under the budget,
    as a searched configuration does, instead of far below it (under a MAC budget, which bits and
    sparsity do not change, they grow to 8 bits and dense). The smallest configuration fits (checked
    beforehand) and a cheaper move exists until it is reached: this ends."""
    keys = model.width_keys()
    # op options (0, 1): identity first, so a draw of 0.0 skips the block
    options = DecisionSpace.of(model, by_layer=True, op_options=(0.0, 1.0)).options
    config = draw_configuration(model, keys, options, rng)
    select_configuration(model, config)
    while budget.exact(model) > budget.limit:
        moves = [moved for key in options
                 if (moved := cheaper(model, budget, config, key, options[key], keys)) is not None]
        config = moves[rng.integers(len(moves))][2]
        select_configuration(model, config)
    grown = True
    while grown:
        grown = False
        for key in rng.permutation(list(options)):
            moved = next_option(config, key, options[key], keys, up=True)
            if moved is None:
                continue
            select_configuration(model, moved[2])
            if budget.exact(model) <= budget.limit:
                config, grown = moved[2], True
        select_configuration(model, config)
    return config


class RandomSearch(UDCSearch):
    """Shares UDC's settings, supernet, budget checks and finetuning; replaces the search by sampling."""

    def __init__(self, dataset: Dataset, budget_bytes: float | None = None, macs: int | None = None,
                 settings: dict | None = None, quiet: bool = False, pretrained: dict | None = None, **options):
        super().__init__(dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained, **options)
        self.strategy = "random"

    def run(self) -> Candidate:
        s = self.settings
        trials, validation = s["random_trials"], s["validation_images"]
        train, held = held_out(self.dataset, validation)
        x_val, y_val = held.x_train, held.y_train
        folded = self._folded_supernet(pretrained=True)
        started = time.perf_counter()
        # The trials share UDC's warm-up + search steps; the winner then gets UDC's finetuning.
        steps_each = max(1, (s["warmup_steps"] + s["search_steps"]) // trials)
        rng = np.random.default_rng(s["seed"])
        best = None
        for trial in range(trials):
            model = copy.deepcopy(folded)
            config = random_configuration(model, self.budget, rng)
            select_configuration(model, config)
            finetune(model, train, steps_each, s["finetune_batch_size"], s["finetune_lr"], s["stage_fractions"],
                     s["quant_noise"], s["qhat"], s["seed"] + trial, True, f"random trial {trial + 1}/{trials}")
            accuracy = evaluate(model, x_val, y_val)
            if best is None or accuracy > best[0]:
                best = (accuracy, config, trial)
        accuracy, config, trial = best
        # The winner is finetuned again from the pretrained weights with the full finetuning budget.
        model = copy.deepcopy(folded)
        select_configuration(model, config)
        exact, met = self.check_constraint(model)
        self.timings["search_s"] = time.perf_counter() - started
        started = time.perf_counter()
        meta = {"strategy": "random", "budgets": self.limits, **budget_meta(self.budget, exact, met),
                "random": {"trials": trials, "steps_per_trial": steps_each, "best_trial": trial,
                           "validation_accuracy": accuracy}}
        self.searched = searched_candidate(model, s, meta, self.budget)
        candidate = self.deploy(model, meta)
        self.timings["finetune_s"] = time.perf_counter() - started
        candidate.spec["meta"]["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        return candidate

