"""NeuralScale on the UDC space: filter counts per layer as a power law of a global scale
tau, filters_l = alpha_l * tau^beta_l, fitted to an architecture descent, then tau moved by the
update of eqs. 12-16 until the configuration meets the budget.

Architecture descent: the first-order Taylor importance |sum theta * dL/dtheta| of every filter
(summed over the layers of a width group, which keep their filters together) ranks the filters
globally; removing them from the least important up gives the filter count of every group at each
total tau. With ``neuralscale_iterations`` > 1 the configuration found is trained briefly and the
descent repeated from it, adding its points to the fit. Pretraining epochs P are the searches'
``pretrain_epochs``. NeuralScale searches filters only: weights stay 8-bit and dense.
"""

from __future__ import annotations

import time

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


def scale_to_budget(alpha: np.ndarray, beta: np.ndarray, size_of, budget: float, tau: float, eta: float = 0.5,
                    iterations: int = 500, tolerance: float = 1e-3) -> float:
    """Eqs. 12-16: tau <- tau - eta * (h(tau) - t) * sum_l beta_l alpha_l tau^(beta_l - 1), with h the
    size of the configuration Phi(tau) = alpha * tau^beta; h and t are taken relative to t and the
    step relative to tau so one eta serves every network."""
    for _ in range(iterations):
        error = size_of(alpha * tau ** beta) / budget - 1.0
        if abs(error) < tolerance:
            break
        slope = np.sum(beta * alpha * tau ** (beta - 1.0)) * tau / np.sum(alpha * tau ** beta)
        tau = max(tau - eta * error * tau / max(slope, 1e-6), 1e-6)
    return tau


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
            importance = self._importance(model, groups, widths, rng)
            for tau, counts in _descent(importance, groups):
                taus.append(tau)
                filters.append(counts)
            alpha, beta = fit_power_laws(np.array(taus, float), np.array(filters, float))
            tau = scale_to_budget(alpha, beta, lambda f: self._size(model, groups, f), self.budget.limit,
                                  float(sum(groups.values())), s["neuralscale_eta"])
            widths = self._widths(groups, alpha * tau ** beta)
        self.fit = {"alpha": alpha.tolist(), "beta": beta.tolist(), "tau": tau, "groups": list(groups)}
        self.history = [{"step": index, "task": None, "loss": None, "relaxed_cost": None, "tau": t}
                        for index, t in enumerate(taus)]
        self._decisions_from(groups, widths)
        select_configuration(model, self.argmax_configuration(model))
        model.load_state_dict(self.pretrained)  # the found configuration is trained from the pretrained weights
        self.timings["search_s"] = time.perf_counter() - started
        return model

    def _configuration(self, model: GraphNet, widths: dict) -> dict:
        return {"layers": {name: {"bits": 8, "nonzero": 1.0,
                                  "width": widths[self.width_keys[name]] if self.width_keys[name] else 1.0}
                           for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)},
                "skipped": []}

    def _widths(self, groups: dict, counts) -> dict:
        return {key: grid_width(int(np.clip(round(c), 1, channels)), channels)
                for (key, channels), c in zip(groups.items(), counts)}

    def _size(self, model: GraphNet, groups: dict, counts) -> float:
        select_configuration(model, self._configuration(model, self._widths(groups, counts)))
        return self.budget.exact(model)

    def _importance(self, model: GraphNet, groups: dict, widths: dict, rng) -> dict[str, torch.Tensor]:
        """Taylor first-order importance per filter of each width group at the current configuration."""
        s = self.settings
        select_configuration(model, self._configuration(model, widths))
        model.eval()  # importance on the network as configured, no quantization noise
        model.zero_grad(set_to_none=True)
        for images, labels in training_batches(self.dataset, rng, s["neuralscale_batches"], s["batch_size"]):
            F.cross_entropy(model(images), labels).backward()
        importance = {key: torch.zeros(channels) for key, channels in groups.items()}
        for name, layer in model.layers.items():
            key = self.width_keys[name]
            if isinstance(layer, SearchableLayer) and key in importance and layer.theta.grad is not None:
                contribution = (layer.theta * layer.theta.grad).detach()
                importance[key] += contribution.flatten(1).sum(1).abs()[: groups[key]]
        model.zero_grad(set_to_none=True)
        for key, channels in groups.items():  # filters the configuration drops have no importance left
            importance[key][kept_count(channels, widths[key]):] = 0.0
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


def _descent(importance: dict[str, torch.Tensor], groups: dict) -> list[tuple[float, list[int]]]:
    """(tau, filters per group) while removing filters from the least important up (each group keeps one)."""
    keys = list(groups)
    scores = torch.cat([importance[key] for key in keys])
    owner = torch.cat([torch.full((groups[key],), index) for index, key in enumerate(keys)])
    order = torch.argsort(scores)  # least important first
    counts = np.array([int((importance[key] > 0).sum()) or groups[key] for key in keys])
    total = int(counts.sum())
    stops = set(np.linspace(total, max(len(keys), total // 10), DESCENT_POINTS).astype(int).tolist())
    points = [(float(total), counts.tolist())]
    for index in order.tolist():
        group = int(owner[index])
        if scores[index] <= 0.0 or counts[group] <= 1:
            continue
        counts[group] -= 1
        if int(counts.sum()) in stops:
            points.append((float(counts.sum()), counts.tolist()))
    return points
