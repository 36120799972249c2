"""Random search baseline (the UDC paper's Sec. 6.1, Fig. 5): sample configurations that meet the budget,
finetune each, keep the one with the best accuracy on held-out training images.

``random_protocol = "shared"`` (default, sized for CPUs): the trials together get the training steps of one
UDC search, each briefly finetuned, and the winner is finetuned again from the pretrained weights as UDC's
result is, so both spend comparable compute. ``"paper"``: every trial gets the full three-stage finetuning
UDC's result gets (``finetune_steps``), and the best trial, as trained, is the result; the paper charges a
UDC search as 3 such trials (2 to search, 1 to finetune). Either way the candidate's meta ("random")
records every trial's held-out accuracy and the best accuracy after n trials averaged over 100 seeded
permutations of the trial order (Fig. 5b).
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

PERMUTATIONS = 100  # orders of the trials averaged over for the best accuracy after n trials (Fig. 5b)
UDC_COST_TRIALS = 3  # the paper's cost of a UDC search in random trials: 2 to search, 1 to finetune


def best_after_trials(accuracies: list[float], seed: int, permutations: int = PERMUTATIONS) -> list[float]:
    """The best accuracy after n = 1..len(accuracies) trials, averaged over ``permutations`` random orders of
    the trials (seeded): non-decreasing, ending at the best trial's accuracy."""
    values = np.asarray(accuracies, dtype=float)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(len(values)) for _ in range(permutations)])
    return np.maximum.accumulate(values[orders], axis=1).mean(axis=0).tolist()


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

    def train_trial(self, model: GraphNet, train: Dataset, steps: int, trial: int) -> dict:
        """Finetune trial ``trial``'s configuration in place for ``steps`` steps on ``train``; returns what
        ``finetune`` does (the weight norms)."""
        s = self.settings
        return finetune(model, train, steps, s["finetune_batch_size"], s["finetune_lr"], s["stage_fractions"],
                        s["quant_noise"], s["qhat"], s["seed"] + trial, True,
                        f"random trial {trial + 1}/{s['random_trials']}", recipe=s)

    def run(self) -> Candidate:
        s = self.settings
        trials, validation = s["random_trials"], s["validation_images"]
        train, held = held_out(self.dataset, validation)
        x_val, y_val = held.x_train, held.y_train
        folded = self._folded_supernet(pretrained=True)
        started = time.perf_counter()
        paper = s["random_protocol"] == "paper"
        # shared: the trials share UDC's warm-up + search steps; paper: each gets UDC's finetuning.
        steps_each = s["finetune_steps"] if paper else max(1, (s["warmup_steps"] + s["search_steps"]) // trials)
        rng = np.random.default_rng(s["seed"])
        best, accuracies = None, []
        for trial in range(trials):
            model = copy.deepcopy(folded)
            config = random_configuration(model, self.budget, rng)
            select_configuration(model, config)
            norms = self.train_trial(model, train, steps_each, trial)
            accuracies.append(evaluate(model, x_val, y_val))
            if best is None or accuracies[-1] > best[0]:
                best = (accuracies[-1], config, trial, (model, norms) if paper else None)
        accuracy, config, trial, trained = best
        # The winner's configuration as drawn, before finetuning.
        model = copy.deepcopy(folded)
        select_configuration(model, config)
        exact, met = self.check_constraint(model)
        self.timings["search_s"] = time.perf_counter() - started
        started = time.perf_counter()
        meta = {"strategy": "random", "budgets": self.limits, **budget_meta(self.budget, exact, met),
                "random": {"protocol": s["random_protocol"], "trials": trials, "steps_per_trial": steps_each,
                           "best_trial": trial, "validation_accuracy": accuracy, "trial_accuracies": accuracies,
                           "best_after_trials": best_after_trials(accuracies, s["seed"]),
                           **({"udc_cost_trials": UDC_COST_TRIALS} if paper else {})}}
        self.searched = searched_candidate(model, s, meta, self.budget)
        if paper:  # the best trial is emitted as trained: no second finetuning
            candidate = self.deploy(trained[0], meta, norms=trained[1], original=model)
        else:  # the winner is finetuned again from the pretrained weights with the full finetuning budget
            candidate = self.deploy(model, meta)
        self.timings["finetune_s"] = time.perf_counter() - started
        candidate.spec["meta"]["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        return candidate
