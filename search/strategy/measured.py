"""Budgets in measured units: the Flash model calibrated against Vela for a supernet, and every emitted
candidate verified on its compiled model, moved cheaper until its measured figures fit.

Search compiles nothing: ``DeployedFigures`` (the harness's ``deployed_figures`` provider) exports a
candidate to int8, compiles it with Vela and returns Vela's figures (``flash_bytes``, ``sram_bytes``,
``npu_cycles``, ``mac_count``) with the Flash model's features of that model (``features``) and the Vela
settings they hold for (``key``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from core import budgets
from core.candidate import Candidate
from core.errors import UsageError
from core.flash_model import FlashModel
from search.decisions import DecisionSpace
from search.flash_cost import FlashCost, WeightEncoder
from search.space import GraphNet, SearchableLayer, to_candidate
from search.strategy.budget import (Budget, BudgetWarning, cheaper, draw_configuration, select_configuration,
                                    selected_configuration)

DeployedFigures = Callable[[Candidate, np.ndarray], dict]
VELA_FIGURES = {"flash": "flash_bytes", "npu_cycles": "npu_cycles", "sram": "sram_bytes"}
CALIBRATION_NETWORKS = 8  # compiles a Flash model is fitted to: the largest, the smallest and random draws
CALIBRATION_IMAGES = 32  # activation ranges only; Flash does not depend on them
CALIBRATION_SEED = 0  # the calibration supernet's weights and draws: the same for every search of a space
MAX_MOVES = 64


def searched_budget(model: GraphNet, limits: dict[str, float], calibration_supernet: Callable[[], GraphNet], dataset,
                    figures: DeployedFigures | None, encoder: WeightEncoder | None, quiet: bool = False
                    ) -> tuple[Budget, FlashModel | None]:
    """The budget a search constrains (``budgets.searched_kind``) and, for Flash, the Flash model calibrated on
    ``calibration_supernet()`` (seeded, so its compiles are found in the harness's cache again)."""
    measured = [kind for kind in limits if kind in VELA_FIGURES]
    if measured and figures is None:
        raise UsageError(f"a {measured[0]} budget is measured on the compiled candidate; run the search through the "
                         "harness (python -m harness search), which compiles with Vela")
    kind = budgets.searched_kind(limits)
    if kind != "flash":
        return Budget(model, budget_bytes=limits.get("size_bound") if kind == "size_bound" else None,
                      macs=limits.get("macs") if kind == "macs" else None), None
    if encoder is None:
        raise UsageError("a Flash budget needs Vela's weight codec; run the search through the harness")
    flash_model = calibrate_flash(calibration_supernet(), calibration_images(dataset), figures, CALIBRATION_SEED,
                                  quiet=quiet)
    return Budget(model, flash_bytes=limits["flash"], flash_cost=FlashCost(model, flash_model, encoder)), flash_model


def recalibrate(budget: Budget, model: GraphNet, dataset, figures: DeployedFigures, quiet: bool = False) -> FlashModel:
    """The Flash model fitted again on networks of ``model``'s own weights (the pretrained supernet: trained
    weights encode unlike initial ones), and ``budget``'s rates measured on them; ``model`` is left as it is."""
    networks = copy.deepcopy(model)
    for layer in networks.searchable_layers():
        layer.init_option_ranges()  # each bitwidth's clip range for these weights, as the search starts from
    flash_model = calibrate_flash(networks, calibration_images(dataset), figures, CALIBRATION_SEED, quiet=quiet)
    budget.flash_cost.flash_model = flash_model
    budget.flash_cost.refresh(model)
    return flash_model


def calibration_images(dataset) -> np.ndarray:
    return np.asarray(dataset.x_train[:CALIBRATION_IMAGES], np.float32)


def calibrate_flash(model: GraphNet, images: np.ndarray, figures: DeployedFigures, seed: int,
                    networks: int = CALIBRATION_NETWORKS, quiet: bool = False) -> FlashModel:
    """A Flash model fitted to Vela's figures for ``networks`` configurations of ``model`` (its weights as
    they are): the largest, the smallest and uniform random draws; the selection is restored."""
    saved = selected_configuration(model)
    keys = model.width_keys()
    options = DecisionSpace.of(model, by_layer=True, op_options=(0.0, 1.0)).options
    rng = np.random.default_rng(seed)
    configurations = [{key: (max if extreme else min)(values) for key, values in options.items()}
                      for extreme in (True, False)]
    configurations = [_configuration(model, keys, choice) for choice in configurations]
    configurations += [draw_configuration(model, keys, options, rng) for _ in range(networks - 2)]
    samples, key = [], ""
    try:
        for config in tqdm(configurations, desc="Flash model: compiling the supernet with Vela", leave=False,
                           disable=True if quiet else None):
            select_configuration(model, config)
            model.refresh_masks()
            try:
                candidate = to_candidate(model, f"{model.architecture}-flash-calibration", {})
            except ValueError:  # a layer whose every weight quantizes to zero: no network to compile
                continue
            measured = figures(candidate, images)
            samples.append((measured["features"], float(measured["flash_bytes"])))
            key = measured["key"]
    finally:
        select_configuration(model, saved)
    return FlashModel.fit(samples, key)


def _configuration(model: GraphNet, keys: dict, choice: dict) -> dict:
    layers = {name: {"bits": choice[f"{name}:bits"], "nonzero": choice[f"{name}:nonzero"],
                     "width": 1.0 if keys[name] is None else choice[f"{keys[name]}:width"]}
              for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    return {"layers": layers, "skipped": [block for block in model.blocks if choice[f"{block}:op"] == 0.0]}


def measured_costs(candidate: Candidate, limits: dict[str, float], figures: Callable[[], dict]) -> dict[str, float]:
    """The candidate's cost in each budgeted kind: Vela's figures (``figures()`` compiles, only where a
    budget needs them), counted MACs, the size bound in bytes."""
    from search.strategy.emit import deployed_macs, size_bound_bits

    compiled = figures() if any(kind in limits for kind in VELA_FIGURES) else {}
    values = {kind: float(compiled[key]) for kind, key in VELA_FIGURES.items() if kind in limits}
    if "macs" in limits:
        values["macs"] = deployed_macs(candidate)
    if "size_bound" in limits:
        values["size_bound"] = size_bound_bits(candidate) / 8
    return values


def over_budget(values: dict[str, float], limits: dict[str, float]) -> list[str]:
    return [kind for kind in budgets.KINDS if kind in limits and values[kind] > limits[kind]]


def cost_for(kind: str, model: GraphNet, budget: Budget, limits: dict[str, float]) -> Budget:
    """The predicted cost a measured excess of ``kind`` is repaired along: the search's own budget where it
    is of that kind; the size bound; MACs for MACs, NPU cycles and SRAM (moves that drop channels or blocks)."""
    if kind == "flash" and budget.kind == "flash" or kind == "size_bound" and budget.kind == "size":
        return budget
    if kind == "size_bound":
        return Budget(model, budget_bytes=limits["size_bound"])
    return budget if budget.kind == "macs" else Budget(model, macs=1)


def measured_move(model: GraphNet, cost: Budget, decisions: dict, width_keys: dict, excess: float,
                  log_probability: Callable[[str, float], float]) -> tuple[str, dict] | None:
    """One decision moved to a cheaper option of ``cost`` (``budget.cheaper``): among moves whose predicted
    relative saving covers the measured relative ``excess`` (over the budget / measured: the predicted cost
    may be another kind's, MACs for NPU cycles), the least likely to be lost (``log_probability``), the
    smallest saving on ties; else the move losing the least log-probability per unit saved, the largest
    saving on ties. None where no decision has a cheaper option. ``model`` has the configuration selected."""
    config = selected_configuration(model)
    now = cost.exact(model)
    moves = []
    for key, options in decisions.items():
        moved = cheaper(model, cost, config, key, options, width_keys)
        if moved is None:
            continue
        option_from, option_to, moved_config, after = moved
        lost = log_probability(key, option_from) - log_probability(key, option_to)
        moves.append(((now - after) / now >= excess, lost, now - after, f"{key} {option_from:g}->{option_to:g}",
                      moved_config))
    if not moves:
        return None
    finishing = [m for m in moves if m[0]]
    best = (min(finishing, key=lambda m: (m[1], m[2])) if finishing
            else min(moves, key=lambda m: (m[1] / m[2], -m[2])))
    return best[3], best[4]


def apply_configuration(model: GraphNet, config: dict) -> None:
    """Select ``config`` on a finetuned model: a layer whose bits change gets the clip range of its weights at
    the new bits; masks are recomputed on the kept slices."""
    bits = {name: layer.bits for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    select_configuration(model, config)
    for name, layer in model.layers.items():
        if isinstance(layer, SearchableLayer) and layer.bits != bits[name]:
            layer.init_range()
    model.refresh_masks()


def move_options(model: GraphNet, decisions, fixed: tuple[str, ...]):
    """The decisions a measured repair may move (``node:axis`` -> options) and the log-probability of an
    option under a search's learned ``decisions`` (0 for every option where a strategy has none, as random
    search; ``fixed``: axes the search holds fixed)."""
    if decisions is None:
        options = DecisionSpace.of(model, by_layer=True, op_options=(0.0, 1.0), without=fixed).options
        return options, lambda key, option: 0.0

    def log_probability(key: str, option: float) -> float:
        probabilities = decisions[key].probs().detach()
        return float(probabilities[decisions[key].options.index(option)].clamp_min(1e-12).log())

    return {key: decision.options for key, decision in decisions.items()}, log_probability


def verify_measured(candidate: Candidate, model: GraphNet, dataset, budget: Budget, limits: dict[str, float],
                    figures: DeployedFigures, options: dict, log_probability,
                    recover: Callable[[GraphNet], None] | None = None) -> Candidate:
    """Measure the emitted ``candidate`` (selected in ``model``) in every budgeted kind; while one is over its
    budget, move one decision cheaper along that kind's predicted cost (``measured_move``), let ``recover``
    train the moved configuration briefly, emit and measure again. The candidate's meta records the
    measured figures before and after, every move and the measured verdict (``constraint_met_measured``);
    moves and a miss are warned about."""
    from search.strategy.emit import emit_candidate

    images = calibration_images(dataset)
    values = measured_costs(candidate, limits, lambda: figures(candidate, images))
    first, moves = dict(values), []
    width_keys = model.width_keys()
    while (over := over_budget(values, limits)) and len(moves) < MAX_MOVES:
        kind = over[0]
        move = measured_move(model, cost_for(kind, model, budget, limits), options, width_keys,
                             (values[kind] - limits[kind]) / values[kind], log_probability)
        if move is None:
            break
        description, config = move
        apply_configuration(model, config)
        if recover is not None:
            recover(model)
        with warnings.catch_warnings():  # the searched cost's verdict: the measured one is what counts here
            warnings.simplefilter("ignore", BudgetWarning)
            candidate = emit_candidate(model, dataset, candidate.spec["meta"], budget)
        after = measured_costs(candidate, limits, lambda: figures(candidate, images))
        moves.append(f"{description} ({kind} {values[kind]:.0f} -> {after[kind]:.0f})")
        values = after
    over = over_budget(values, limits)
    candidate.spec["meta"].update({"measured": values, "measured_before_moves": first, "measured_moves": moves,
                                   "constraint_met_measured": not over})
    strategy = candidate.spec["meta"].get("strategy", "search")
    if moves:
        warnings.warn(f"{strategy}: the compiled candidate was over its budget; moved {len(moves)} decision(s) "
                      f"({'; '.join(moves)})", BudgetWarning, stacklevel=2)
    if over:
        warnings.warn(f"{strategy}: the compiled candidate measures {budgets.describe(over[0], values[over[0]])}, "
                      f"over its budget of {budgets.describe(over[0], limits[over[0]])}, and no decision has a "
                      "cheaper option: constraint NOT met", BudgetWarning, stacklevel=2)
    return candidate
