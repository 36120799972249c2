"""Random search baseline (paper 001 Sec. 5, Fig. 5): sample configurations that meet the budget,
finetune each briefly, keep the one with the best held-out accuracy. The trials together get the
training steps of one UDC search, and the winner is finetuned as UDC's result is, so both spend
comparable compute.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from harness.candidate import Candidate
from harness.data import Dataset
from harness.errors import UsageError
from search.space import GraphNet, SearchableLayer
from search.strategy.finetune import finetune
from search.strategy.uniform import evaluate
from search.strategy.udc import (
    Budget, UDCSearch, budget_meta, finish_candidate, select_configuration,
)

RANDOM_DEFAULTS = {"random_trials": 4, "validation_images": 2000}
MAX_DRAWS_PER_TILT = 200  # draws before the sampler leans further towards small options


def random_configuration(model: GraphNet, budget: Budget, rng: np.random.Generator) -> dict:
    """A configuration drawn uniformly per decision (width groups and blocks as in UDC) whose exact cost
    meets the budget. Where uniform draws keep failing, options are drawn with weights leaning
    ever more towards the small end; the smallest configuration always fits (checked beforehand)."""
    keys = model.width_keys()
    tilt = 0.0
    while True:
        for _ in range(MAX_DRAWS_PER_TILT):
            config = _draw(model, keys, rng, tilt)
            select_configuration(model, config)
            if budget.exact(model) <= budget.target:
                return config
        tilt += 1.0


def _draw(model: GraphNet, keys: dict, rng: np.random.Generator, tilt: float) -> dict:
    def pick(options, cheap_first):
        order = sorted(options, reverse=not cheap_first)
        weights = np.exp(-tilt * np.arange(len(order)))
        return order[rng.choice(len(order), p=weights / weights.sum())]

    widths, layers = {}, {}
    for name, layer in model.layers.items():
        if isinstance(layer, SearchableLayer):
            width = 1.0 if keys[name] is None else widths.setdefault(keys[name], pick(layer.width_options, True))
            layers[name] = {"bits": pick(layer.bit_options, True), "nonzero": pick(layer.nonzero_options, True),
                            "width": width}
    skip_probability = 1.0 - 0.5 * np.exp(-tilt)  # 1/2 untilted, -> 1 as the tilt grows
    skipped = [block for block in model.blocks if rng.random() < skip_probability]
    return {"layers": layers, "skipped": skipped}


class RandomSearch(UDCSearch):
    """Shares UDC's settings, supernet, budget checks and finetuning; replaces the search by sampling."""

    def __init__(self, dataset: Dataset, budget_bytes: float | None = None, macs: int | None = None,
                 settings: dict | None = None, quiet: bool = False):
        settings = dict(settings or {})
        own = {key: settings.pop(key, default) for key, default in RANDOM_DEFAULTS.items()}
        if own["random_trials"] < 1:
            raise UsageError(f"random_trials must be >= 1, got {own['random_trials']}")
        super().__init__(dataset, budget_bytes, macs, settings, quiet=quiet)
        self.strategy, self.random_settings = "random", own

    def run(self) -> Candidate:
        s, trials = self.settings, self.random_settings["random_trials"]
        validation = self.random_settings["validation_images"]
        if validation >= len(self.dataset.x_train):
            raise UsageError(f"validation_images={validation} leaves no training images; lower it")
        train = dataclasses.replace(self.dataset, x_train=self.dataset.x_train[:-validation],
                                    y_train=self.dataset.y_train[:-validation])
        x_val, y_val = self.dataset.x_train[-validation:], self.dataset.y_train[-validation:]
        folded = self._folded_supernet(pretrained=True)
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
        return finish_candidate(model, self.dataset, {**s, **self.random_settings}, self.quiet, {
            "strategy": "random", **budget_meta(self.budget, exact, met),
            "random": {"trials": trials, "steps_per_trial": steps_each, "best_trial": trial,
                       "validation_accuracy": accuracy}})

