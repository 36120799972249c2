"""UNAS on the UDC space: the relaxed search of UDC with UNAS's objective
E[L_gen] + lambda_lat * E[max(0, L_lat(z) - t)] instead of UDC's size penalty, lambda_lat annealed
linearly from zero, skip-connection dropout during the search and a constant Gumbel-softmax temperature
(App. E.1: dropout 0.1, tau 0.4).

The generalisation loss L_gen = L_train + lambda_gen (L_val - L_train) (lambda_gen = 0.5) trains pi; theta
trains on L_train alone. The search's images are split: theta's batches come from the training images
but the last ``validation_images``, L_val is the loss on a batch of those, under the step's z (the same
samples, the same dropped shortcuts). The pretraining and the finetuning use the whole training set.

The latency of a configuration comes from a table of cycle estimates per layer, measured on the
pretrained supernet compiled at each width option (``build_latency_table``), not from FLOPs. The
search cannot compile a model itself: the caller hands it an ``operator_cycles`` cost provider
(``search.cost.OperatorCycles``; the harness's compiles with Vela).
The size budget is held the same way (a hinge on the relaxed size, annealed alike), so the result
competes under the harness's budget; gamma(pi) is checked and repaired as for UDC. The latency
limit t (UNAS's latency target) is ``unas_latency_fraction`` of the full network's latency unless ``unas_latency_cycles``
names it.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import torch
import torch.nn.functional as F

from core.data import Dataset
from core.errors import UsageError
from search import cost
from search.relaxation import linear
from search.settings import UNAS_DEFAULTS
from search.space import Add, GraphNet, SearchableLayer
from search.strategy.budget import select_configuration
from search.strategy.udc import UDCSearch
from search.strategy.uniform import held_out, training_batches


def hinge_penalty(values, limit: float):
    """E[max(0, v - t)] / t over the samples (t the limit): zero at or under it, linear above it."""
    return torch.relu(values - limit).mean() / limit


def scaled_gradient(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` itself, passing ``factor`` times the gradient back."""
    constant = value.detach()
    return constant + factor * (value - constant)


@contextlib.contextmanager
def held(parameters):
    """The parameters as constants in the forwards inside: no gradient reaches them."""
    trained = [p for p in parameters if p.requires_grad]
    for p in trained:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trained:
            p.requires_grad_(True)


def build_latency_table(model: GraphNet, dataset: Dataset, widths,
                        operator_cycles: cost.OperatorCycles) -> cost.LatencyTable:
    """Per-layer cycles for the supernet at every width in ``widths`` (dense, at the widest bitwidth: the
    NPU computes in int8 whatever the grid, so cycles hardly depend on it), from ``operator_cycles``."""
    from search.space import to_candidate

    names = [name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)]
    cycles: dict[str, dict[float, float]] = {name: {} for name in names}
    fixed = []
    calibration = dataset.x_train[:64]
    for width in widths:
        for layer in model.searchable_layers():
            layer.select(bits=max(layer.bit_options), width=width if width in layer.width_options else 1.0)
        operators = operator_cycles(to_candidate(model, f"latency-w{width:g}"), calibration)
        owned = 0
        for name in names:
            pattern = re.compile(rf"/{re.escape(name)}(_\d+)?/")
            layer_cycles = sum(c for operator, c in operators if pattern.search(operator))
            cycles[name][width] = float(layer_cycles)
            owned += layer_cycles
        fixed.append(sum(c for _, c in operators) - owned)
    select_configuration(model, {"layers": {}, "skipped": []})
    return cost.LatencyTable(cycles, float(np.mean(fixed)))


class UNASSearch(UDCSearch):
    extra_defaults = UNAS_DEFAULTS

    def __init__(self, dataset, budget_bytes=None, macs=None, settings=None, quiet=False, pretrained=None,
                 operator_cycles: cost.OperatorCycles | None = None, **options):
        settings = {**(settings or {}), "projection": False, "rejection": False}
        super().__init__(dataset, budget_bytes, macs, settings, quiet=quiet, pretrained=pretrained, **options)
        self.strategy = "unas"
        self.operator_cycles = operator_cycles
        s = self.settings
        if s["unas_tau"] > 0:  # a constant temperature; 0 keeps the [udc] tau schedule
            s["tau"] = [s["unas_tau"], s["unas_tau"]]

    def _search_once(self, size_weight: float) -> GraphNet:
        s = self.settings
        if s["unas_loss"] == "generalization":
            self.training_split, self.validation_split = held_out(self.dataset, s["validation_images"])
            batch = s["batch_size"] * s["samples"] // self.world
            if batch > s["validation_images"]:
                raise UsageError(f"validation_images={s['validation_images']} holds fewer images than a search "
                                 f"step's {batch}; raise it or lower batch_size")
        model = self._folded_supernet(pretrained=True)
        if self.operator_cycles is None:
            raise UsageError("UNAS needs an operator_cycles cost provider to build its latency table; "
                             "run it through the harness (python -m harness search --strategy unas)")
        self.latency = build_latency_table(model, self.dataset, sorted(s["width_options"]), self.operator_cycles)
        full = sum(self.latency.layer(name, 1.0) for name in self.latency.cycles) + self.latency.fixed
        given = s["unas_latency_cycles"]
        self.latency_limit = float(given) if given > 0 else s["unas_latency_fraction"] * full
        self.dropout_generator = torch.Generator().manual_seed(s["seed"] + 1)
        return super()._search_once(size_weight)

    def search_batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        """theta's batches from the training split; the validation split's, one a step, drawn alongside."""
        if self.settings["unas_loss"] == "train":
            return super().search_batches(rng, steps, batch_size)
        own = np.random.default_rng(self.settings["seed"] + 1 + 7919 * self.rank)  # this process's share
        self.validation_batches = training_batches(self.validation_split, own, steps, batch_size // self.world,
                                                   self.device)
        return training_batches(self.training_split, rng, steps, batch_size, self.device)

    def task_loss(self, model: GraphNet, z: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                  warming_up: bool) -> torch.Tensor:
        """L_gen = (1 - lambda_gen) L_train + lambda_gen L_val in value and in pi's gradient; theta's is L_train's.
        The training batch runs under z passing back (1 - lambda_gen) of its gradient to pi, the validation
        batch under z (the same dropped shortcuts) with theta held. Warming up (pi frozen), L_train."""
        if warming_up or self.settings["unas_loss"] == "train":
            return super().task_loss(model, z, images, labels, warming_up)
        weight = self.settings["unas_lambda_gen"]
        train = super().task_loss(model, {key: scaled_gradient(value, 1.0 - weight) for key, value in z.items()},
                                  images, labels, warming_up)
        images, labels = next(self.validation_batches)
        self.relax(model, z, redraw=False)
        with held(model.parameters()):
            validation = F.cross_entropy(model(images), labels)
        return train + weight * (validation - train.detach())

    def relaxed_latency(self, model: GraphNet, z: dict[str, torch.Tensor]) -> torch.Tensor:
        def expected(key, default=1.0):
            return self.decisions[key].expected(z[key]) if key in z else default

        total = self.latency.fixed
        for name, layer in model.layers.items():
            if not isinstance(layer, SearchableLayer):
                continue
            out_key = f"{self.width_keys[name]}:width"
            in_key = f"{self.width_keys[model.sources[name][0]]}:width"
            options = self.decisions[out_key].options if out_key in z else None
            layer_cycles = self.latency.relaxed_layer(name, z.get(out_key), options, expected(out_key),
                                                      expected(in_key), depthwise=layer.op == "dwconv")
            if name in self.block_of:
                layer_cycles = layer_cycles * expected(f"{self.block_of[name]}:op")
            total = total + layer_cycles
        return torch.as_tensor(total).reshape(-1)

    def objective(self, model: GraphNet, z: dict, task: torch.Tensor, phase: float,
                  size_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Task loss plus the hinges on latency and size, their weights annealed from zero."""
        ramp = linear(0.0, 1.0, phase)
        relaxed = self.relaxed_cost(model, z)
        latency = hinge_penalty(self.relaxed_latency(model, z), self.latency_limit)
        penalty = self.settings["unas_lambda_latency"] * latency + size_weight * hinge_penalty(relaxed, self.budget.limit)
        return task + ramp * penalty, relaxed

    def relax(self, model: GraphNet, z: dict[str, torch.Tensor], redraw: bool = True) -> None:
        """UDC's relaxation, and in training skip-connection dropout on the identity option: each sample's
        shortcut dropped with probability ``unas_skip_dropout`` (drawn anew unless ``redraw`` is off)."""
        super().relax(model, z)
        if not model.training:
            return
        if redraw:
            self.kept = {}
        for name, layer in model.layers.items():
            if isinstance(layer, Add) and f"{name}:op" in z:
                identity = z[f"{name}:op"][:, 1]
                if redraw:
                    self.kept[name] = (torch.rand(identity.shape, generator=self.dropout_generator)
                                       >= self.settings["unas_skip_dropout"]).to(identity.device)
                layer.shortcut_scale = 1.0 - identity * (~self.kept[name]).to(identity.dtype)

    def enforce_budget(self, model: GraphNet) -> dict:
        figures = super().enforce_budget(model)
        inactive = model.inactive_layers()

        def width(node: str) -> float:
            key = self.width_keys[node]
            return 1.0 if key is None else model.layers[key].width

        latency = self.latency.fixed + sum(
            self.latency.layer(name, width(name), width(model.sources[name][0]), layer.op == "dwconv")
            for name, layer in model.layers.items() if isinstance(layer, SearchableLayer) and name not in inactive)
        return {**figures, "latency_table_cycles": latency, "latency_target_cycles": self.latency_limit}
