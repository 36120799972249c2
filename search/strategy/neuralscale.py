"""NeuralScale on the UDC space: filter counts per layer as a power law of a global scale
tau, filters_l = alpha_l * tau^beta_l, fitted to an architecture descent, then tau moved by the
update of eqs. 12-16 until the configuration meets the budget.

Architecture descent: the first-order Taylor importance |sum theta * dL/dtheta| of every filter
(summed over the layers of a width group, which keep their filters together) ranks the filters
globally; removing them from the least important up gives the filter count of every group at each
total tau. A width keeps a group's first filters, so removing a filter lowers its group's count and
drops its last kept filter. With ``neuralscale_ranking = "iterative"`` (as printed) the filters are
removed in rounds, one a descent point, the importance of the remaining filters computed again on the
pruned network before every round and the least important of the groups' last kept filters dropped
one at a time; ``"one-shot"`` ranks every filter once. With ``neuralscale_iterations`` > 1 the configuration
found is trained briefly and the descent repeated from it, adding its points to the fit. Pretraining
epochs P are the searches' ``pretrain_epochs``. The found configuration is finetuned from the
pretrained weights, or with ``neuralscale_from_scratch`` from a fresh initialisation.
NeuralScale searches filters only: weights stay 8-bit and dense.
"""

from __future__ import annotations

import heapq
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import UsageError
from search.decisions import DecisionSpace, decision_key
from search.settings import NEURALSCALE_DEFAULTS
from search.space import GraphNet, SearchableLayer, kept_count
from search.strategy.budget import select_configuration
from search.strategy.udc import UDCSearch
from search.strategy.uniform import training_batches
from search.strategy.zur import FILTER_GRID, grid_width

DESCENT_POINTS = 24  # tau values sampled along the descent for the fit


def fit_power_laws(taus: np.ndarray, filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha_l, beta_l of filters_l = alpha_l * tau^beta_l by least squares in log-log space;
    taus [P], filters [P, L] (counts >= 1)."""
    design = np.stack([np.ones_like(taus), np.log(taus)], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, np.log(filters), rcond=None)
    return np.exp(coefficients[0]), coefficients[1]


def scale_to_budget(alpha: np.ndarray, beta: np.ndarray, size_of, budget: float, tau: float,
                    eta: float = NEURALSCALE_DEFAULTS["neuralscale_eta"],
                    iterations: int = 2000, tolerance: float = 1e-3) -> float:
    """Eq. 16 as printed: tau_i = tau_{i-1} - eta_abs * (h(tau_{i-1}) - t) * sum_l beta_l alpha_l tau_{i-1}^(beta_l - 1),
    h = ``size_of`` the configuration Phi(tau) = alpha * tau^beta, t = ``budget``, until |h - t| < tolerance * t.

    h and t are in the budget's units, so the one normalisation is the choice of the constant step, fixed
    once at the start tau_0: eta_abs = eta * tau_0 / (t * sum_l beta_l alpha_l tau_0^(beta_l - 1)), which
    makes the first step move tau by eta * tau_0 * (h(tau_0) / t - 1). Every step then uses eta_abs
    unchanged. tau stays positive. Filter counts on a grid make h a staircase that the tolerance may
    never meet: tau then hovers at the step nearest t, and when the iterations run out over the budget
    the result is the last tau visited under it."""
    def gradient(tau: float) -> float:  # d sum_l Phi_l / d tau
        return float(np.sum(beta * alpha * tau ** (beta - 1.0)))

    step = eta * tau / (budget * max(gradient(tau), 1e-12))
    under = None  # the last tau visited whose configuration meets the budget
    for _ in range(iterations):
        error = size_of(alpha * tau ** beta) - budget
        if abs(error) < tolerance * budget:
            return tau
        if error < 0:
            under = tau
        tau = max(tau - step * error * gradient(tau), 1e-6)
    return under if under is not None and size_of(alpha * tau ** beta) > budget else tau


class NeuralScaleSearch(UDCSearch):
    extra_defaults = NEURALSCALE_DEFAULTS

    def __init__(self, dataset, budget_bytes=None, macs=None, settings=None, quiet=False, pretrained=None, **options):
        grid = tuple(k / FILTER_GRID for k in range(1, FILTER_GRID + 1))
        settings = {**(settings or {}), "nonzero_options": [1.0], "width_options": list(grid), "search_depth": False}
        super().__init__(dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained, **options)
        self.strategy = "neuralscale"
        if 8 not in self.settings["bit_options"]:
            raise UsageError("neuralscale keeps 8-bit weights: include 8 in bit_options")
        keys = self.model.width_keys()
        smallest = {name: {"bits": 8, "nonzero": 1.0, "width": grid[0] if keys[name] else 1.0}
                    for name in self._layer_names(self.model)}
        select_configuration(self.model, {"layers": smallest, "skipped": []})
        minimum = self.budget.exact(self.model)
        if self.budget.limit < minimum:
            raise UsageError(f"budget {self.budget.describe(self.budget.limit)} is below neuralscale's smallest "
                             f"configuration (8-bit, 1/{FILTER_GRID} width), {self.budget.describe(minimum)}; "
                             "raise the budget")

    @staticmethod
    def _layer_names(model: GraphNet) -> list[str]:
        return [name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)]

    def argmax_configuration(self, model: GraphNet) -> dict:
        config = super().argmax_configuration(model)
        return {**config, "layers": {name: {**choice, "bits": 8} for name, choice in config["layers"].items()}}

    def search(self) -> GraphNet:
        s = self.settings
        model = self._folded_supernet(pretrained=True)
        started = time.perf_counter()
        self.width_keys = model.width_keys()
        for layer in model.searchable_layers():
            layer.init_option_ranges()
        groups = {key: model.layers[key].out_channels for key in sorted({k for k in self.width_keys.values() if k})}
        rng = np.random.default_rng(s["seed"])
        taus, filters, widths = [], [], {key: 1.0 for key in groups}
        for iteration in range(s["neuralscale_iterations"]):
            if iteration:
                self._train(model, widths, rng)
            kept = [kept_count(channels, widths[key]) for key, channels in groups.items()]
            for tau, counts in _descent(lambda now: self._importance(model, groups, now, rng), kept,
                                        s["neuralscale_ranking"] == "iterative"):
                taus.append(tau)
                filters.append(counts)
            alpha, beta = fit_power_laws(np.array(taus, float), np.array(filters, float))
            sizes = {}  # widths -> size, at these weights
            tau = scale_to_budget(alpha, beta, lambda f: self._size(model, groups, f, sizes), self.budget.limit,
                                  float(sum(groups.values())), s["neuralscale_eta"])
            widths = self._widths(groups, alpha * tau ** beta)
        self.fit = {"alpha": alpha.tolist(), "beta": beta.tolist(), "tau": tau, "groups": list(groups)}
        self.history = [{"step": index, "task": None, "loss": None, "relaxed_cost": None, "tau": t}
                        for index, t in enumerate(taus)]
        self._decisions_from(groups, widths)
        select_configuration(model, self.argmax_configuration(model))
        # the found configuration is trained from the pretrained weights, or from a fresh initialisation
        model.load_state_dict(self._fresh_state() if s["neuralscale_from_scratch"] else self.pretrained)
        self.timings["search_s"] = time.perf_counter() - started
        return model

    def _fresh_state(self) -> dict[str, torch.Tensor]:
        """The untrained supernet's weights, initialised from the search's seed (the global generator untouched)."""
        with torch.random.fork_rng():
            torch.manual_seed(self.settings["seed"])
            return self._folded_supernet(pretrained=False).state_dict()

    def _configuration(self, model: GraphNet, widths: dict) -> dict:
        return {"layers": {name: {"bits": 8, "nonzero": 1.0,
                                  "width": widths[self.width_keys[name]] if self.width_keys[name] else 1.0}
                           for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)},
                "skipped": []}

    def _widths(self, groups: dict, counts) -> dict:
        return {key: grid_width(int(np.clip(round(c), 1, channels)), channels)
                for (key, channels), c in zip(groups.items(), counts)}

    def _size(self, model: GraphNet, groups: dict, counts, sizes: dict) -> float:
        """The budget's cost of the configuration keeping ``counts`` (rounded to the grid); ``sizes`` caches it."""
        widths = self._widths(groups, counts)
        key = tuple(widths.values())
        if key not in sizes:
            select_configuration(model, self._configuration(model, widths))
            sizes[key] = self.budget.exact(model)
        return sizes[key]

    def _importance(self, model: GraphNet, groups: dict, counts: list[int], rng) -> dict[str, torch.Tensor]:
        """Taylor first-order importance per filter of each width group on the network keeping ``counts``
        filters of the groups (the width on the grid that keeps them, the filters beyond the counts zeroed)."""
        s = self.settings
        counts = dict(zip(groups, counts))
        widths = {key: grid_width(counts[key], channels) for key, channels in groups.items()}
        select_configuration(model, self._configuration(model, widths))
        model.eval()  # importance on the network as configured, no quantization noise
        model.zero_grad(set_to_none=True)
        with _dropped(model, self.width_keys, counts):
            for images, labels in training_batches(self.dataset, rng, s["neuralscale_batches"], s["batch_size"]):
                F.cross_entropy(model(images), labels).backward()
        importance = {key: torch.zeros(channels) for key, channels in groups.items()}
        for name, layer in model.layers.items():
            key = self.width_keys[name]
            if isinstance(layer, SearchableLayer) and key in importance and layer.theta.grad is not None:
                contribution = (layer.theta * layer.theta.grad).detach()
                importance[key] += contribution.flatten(1).sum(1).abs()[: groups[key]]
        model.zero_grad(set_to_none=True)
        for key in groups:  # the filters the counts drop have no importance left
            importance[key][counts[key]:] = 0.0
        return importance

    def _train(self, model: GraphNet, widths: dict, rng) -> None:
        s = self.settings
        select_configuration(model, self._configuration(model, widths))
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=s["theta_lr"] * 0.1, fused=True)
        for images, labels in training_batches(self.dataset, rng, s["neuralscale_train_steps"], s["batch_size"]):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

    def _decisions_from(self, groups: dict, widths: dict) -> None:
        """The found widths as UDC decisions (certain of their option) for gamma(pi) and the repair."""
        grid = tuple(k / FILTER_GRID for k in range(1, FILTER_GRID + 1))
        space = DecisionSpace({decision_key(key, "width"): grid for key in groups})
        self.decisions = space.relaxed({decision_key(key, "width"): -10.0 * torch.tensor([abs(w - widths[key]) for w in grid])
                                        for key in groups})

    def enforce_budget(self, model: GraphNet) -> dict:
        return {**super().enforce_budget(model), "neuralscale_fit": self.fit}


@contextmanager
def _dropped(model: GraphNet, width_keys: dict, counts: dict[str, int]):
    """The filters of each width group beyond its count zeroed (weights and bias: the channel outputs
    zero, as if removed), restored on exit."""
    saved = {name: (layer.theta.detach().clone(), layer.bias.detach().clone())
             for name, layer in model.layers.items()
             if isinstance(layer, SearchableLayer) and width_keys[name] in counts}
    with torch.no_grad():
        for name in saved:
            layer, kept = model.layers[name], counts[width_keys[name]]
            layer.theta[kept:] = 0.0
            layer.bias[kept:] = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for name, (theta, bias) in saved.items():
                model.layers[name].theta.copy_(theta)
                model.layers[name].bias.copy_(bias)


def _descent(importance_of, counts: list[int], iterative: bool = True) -> list[tuple[float, list[int]]]:
    """(tau, filters per group) from ``counts`` down to DESCENT_POINTS totals, removing filters from the least
    important up; each group keeps one. ``importance_of(counts)`` scores every group's filters at those counts
    (a dict in the groups' order, zero past the counts). A width keeps a group's first filters, so removing a
    filter lowers its group's count: the filter it drops is the group's last kept one.

    Iterative: a round a descent point, each scoring the remaining filters anew and dropping, one at a time,
    the least important of the groups' last kept filters. One-shot: one ranking of all filters, each taking
    one off its group's count."""
    counts = np.array(counts)
    total = int(counts.sum())
    stops = set(np.linspace(total, max(len(counts), total // 10), DESCENT_POINTS).astype(int).tolist()) - {total}
    points, order = [(float(total), counts.tolist())], None
    for stop in sorted(stops, reverse=True):
        if iterative:
            _drop_last(importance_of(counts.tolist()), counts, stop)
        else:
            if order is None:
                order = iter(_ranked(importance_of(counts.tolist()), counts))
            for group in order:
                if counts[group] > 1:
                    counts[group] -= 1
                if counts.sum() <= stop:
                    break
        if counts.sum() > stop:  # no filter left to remove
            break
        points.append((float(counts.sum()), counts.tolist()))
    return points


def _drop_last(importance: dict[str, torch.Tensor], counts: np.ndarray, stop: int) -> None:
    """Lower ``counts`` to ``stop`` in total, each time by the least important of the groups' last kept filters."""
    scores = [group_scores.tolist() for group_scores in importance.values()]
    last = [(scores[group][count - 1], group) for group, count in enumerate(counts.tolist()) if count > 1]
    heapq.heapify(last)
    while counts.sum() > stop and last:
        _, group = heapq.heappop(last)
        counts[group] -= 1
        if counts[group] > 1:
            heapq.heappush(last, (scores[group][counts[group] - 1], group))


def _ranked(importance: dict[str, torch.Tensor], counts: np.ndarray) -> list[int]:
    """The group of every kept filter, least important first."""
    scores = torch.cat([scores[:count] for scores, count in zip(importance.values(), counts.tolist())])
    owner = torch.cat([torch.full((count,), group) for group, count in enumerate(counts.tolist())])
    return owner[torch.argsort(scores, stable=True)].tolist()
