"""The hard budget of a search and the configurations it is checked on.

``Budget``: the predicted Flash in bytes (``search.flash_cost``), a size in bits of compressed weights
(the size model's bound) or a MAC count, with the exact cost of a network's selected configuration;
``budget_limits`` reads what a search is given; ``select_configuration`` sets a configuration,
``extreme_configuration`` and ``smallest_configuration`` find the cheapest (or costliest) one;
``cheaper`` moves one decision to a strictly cheaper option, the step of a repair, and ``next_option``
one option along its list, the step of a random draw's growth.

The size bound N*(s*b + H2(s)) is not monotone in the nonzero fraction s at b <= 2 (b = 2: s = 0.7
costs 2.28 bits per weight, s = 1 costs 2), so neither the cheapest configuration nor a cheaper move
can be read off the order of the options: both are found by costing the options.
"""

from __future__ import annotations

import itertools
import warnings

from core import budgets
from core.errors import UsageError
from core.size_model import layer_size_bits
from search import cost
from search.flash_cost import FlashCost
from search.space import GraphNet, SearchableLayer, kept_count


class BudgetWarning(UserWarning):
    """The searched configuration misses its budget, or the budget does not constrain the space."""


def budget_limits(limits: dict[str, float] | str | None, budget_bytes: float | None = None,
                  macs: int | None = None) -> dict[str, float]:
    """{kind: limit} from a budget text or dict (``core.budgets``), or from the shorthands ``budget_bytes`` (a
    size bound) and ``macs``; exactly one way, and a kind a search can constrain among them."""
    shorthand = {kind: float(value) for kind, value in (("size_bound", budget_bytes), ("macs", macs)) if value is not None}
    if (limits is None) == (len(shorthand) != 1) or limits is not None and shorthand:
        raise UsageError("give exactly one budget: budgets (e.g. flash=38KiB), a size bound in bytes or a MAC count")
    if isinstance(limits, str):
        limits = budgets.parse_budgets(limits)
    limits = dict(limits or shorthand)
    unknown = [kind for kind in limits if kind not in budgets.KINDS]
    if unknown:
        raise UsageError(f"unknown budget kind {unknown[0]!r}; write budgets as {budgets.FORMS}")
    if any(value <= 0 for value in limits.values()):
        raise UsageError("the budget must be positive")
    if budgets.searched_kind(limits) is None:
        raise UsageError(f"a search needs a Flash, size_bound or MAC budget to search under (npu_cycles and sram are "
                         f"verified on the compiled candidate beside one); write budgets as {budgets.FORMS}")
    return limits


class Budget:
    """A hard budget on the predicted Flash (bytes), the compressed size bound (bits) or MACs, with exact
    costs of a supernet's configurations. ``kind``: ``flash``, ``size`` or ``macs``."""

    def __init__(self, model: GraphNet, budget_bytes: float | None = None, macs: int | None = None,
                 flash_bytes: float | None = None, flash_cost: FlashCost | None = None):
        given = [value for value in (budget_bytes, macs, flash_bytes) if value is not None]
        if len(given) != 1:
            raise UsageError("give exactly one searched budget: Flash in bytes, a size bound in bytes or a MAC count")
        if given[0] <= 0:
            raise UsageError("the budget must be positive")
        if flash_bytes is not None and flash_cost is None:
            raise UsageError("a Flash budget needs the Flash cost model the harness calibrates against Vela")
        self.kind = "flash" if flash_bytes is not None else "size" if budget_bytes is not None else "macs"
        self.limit = {"flash": flash_bytes, "size": 8.0 * (budget_bytes or 0), "macs": float(macs or 0)}[self.kind]
        self.budget_bytes, self.macs, self.flash_bytes = budget_bytes, macs, flash_bytes
        self.flash_cost = flash_cost
        self.sizes = model.output_sizes()

    @property
    def limits(self) -> dict[str, float]:
        """This budget as ``core.budgets`` writes it: {kind: limit}."""
        kind = {"size": "size_bound", "macs": "macs", "flash": "flash"}[self.kind]
        return {kind: self.limit / 8 if self.kind == "size" else self.limit}

    @property
    def compresses(self) -> bool:
        """Whether bits and sparsity change this budget's cost (not under a MAC budget)."""
        return self.kind != "macs"

    def describe(self, value: float) -> str:
        if self.kind == "size":
            return f"{value / 8:.0f} bytes"
        return budgets.describe("flash" if self.kind == "flash" else "macs", value)

    def layer_cost(self, layer: SearchableLayer, name: str, kept_in: int, bits: int | None = None,
                   nonzero: float | None = None) -> float:
        """The exact cost of a layer at its selected options (or the given ``bits`` and ``nonzero``), reading
        ``kept_in`` channels. Its N weights keep kept_count(N, s) nonzeros, as its magnitude mask does."""
        kept_out = kept_in if layer.op == "dwconv" else layer.kept_out_channels()
        height, width = self.sizes[name]
        if self.kind == "macs":
            return cost.layer_macs(layer.op, getattr(layer, "kernel", 1), kept_in, kept_out, height, width)
        per_output = layer.theta[0].numel() * (1 if layer.op == "dwconv" else kept_in / layer.in_channels)
        elements = round(kept_out * per_output)
        nonzero = layer.nonzero if nonzero is None else nonzero
        bits = layer.bits if bits is None else bits
        if self.kind == "flash":
            return self.flash_cost.layer_bytes(name, layer, elements, kept_out, bits, nonzero)
        return layer_size_bits(elements, kept_count(elements, nonzero) / elements, bits or 32)

    def exact(self, model: GraphNet) -> float:
        """The cost of the selected configuration (skipped blocks cost nothing)."""
        kept = {"input": model.input_shape[2]}
        inactive = model.inactive_layers()
        total = self.flash_cost.fixed() if self.kind == "flash" else 0.0
        for name, layer in model.layers.items():
            source = model.sources[name][0]
            if name in inactive:
                continue
            if isinstance(layer, SearchableLayer):
                total += self.layer_cost(layer, name, kept[source])
                kept[name] = kept[source] if layer.op == "dwconv" else layer.kept_out_channels()
            else:
                kept[name] = kept[source]
        return total

    def full_macs(self, layer: SearchableLayer, name: str) -> int:
        height, width = self.sizes[name]
        return cost.layer_macs(layer.op, getattr(layer, "kernel", 1), layer.in_channels, layer.out_channels,
                               height, width)


def draw_configuration(model: GraphNet, keys: dict, options: dict, rng) -> dict:
    """A configuration with each decision (``options``: ``node:axis`` -> options, op options (0, 1)) drawn
    uniformly by ``rng``; width groups (``keys``, ``model.width_keys()``) share one draw."""
    def pick(key):
        return options[key][rng.integers(len(options[key]))]

    widths = {key: pick(f"{key}:width") for key in sorted({k for k in keys.values() if k is not None})}
    layers = {name: {"bits": pick(f"{name}:bits"), "nonzero": pick(f"{name}:nonzero"),
                     "width": 1.0 if keys[name] is None else widths[keys[name]]}
              for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    skipped = [block for block in model.blocks if pick(f"{block}:op") == 0.0]
    return {"layers": layers, "skipped": skipped}


def cost_range(model: GraphNet, budget: Budget) -> tuple[float, float]:
    """The costs of the smallest and the largest configuration of ``model``'s space; selects neither."""
    results = []
    for smallest in (True, False):
        select_configuration(model, extreme_configuration(model, budget, smallest))
        results.append(budget.exact(model))
    select_configuration(model, {"layers": {}, "skipped": []})
    return results[0], results[1]


def check_range(budget: Budget, minimum: float, maximum: float, space: str) -> None:
    """A budget below the ``space``'s smallest configuration is an error; one at or above its largest, a warning."""
    if budget.limit < minimum:
        raise UsageError(f"budget {budget.describe(budget.limit)} is below the smallest configuration of the {space} "
                         f"space, {budget.describe(minimum)}; raise the budget to at least that or add smaller options")
    if budget.limit >= maximum:
        warnings.warn(f"budget {budget.describe(budget.limit)} is at or above the largest configuration "
                      f"({budget.describe(maximum)}): the search is unconstrained", BudgetWarning, stacklevel=4)


def select_configuration(model: GraphNet, config: dict) -> None:
    """Select ``config`` = {"layers": {name: {bits, nonzero, width}}, "skipped": [block, ...]}."""
    for name, choice in config["layers"].items():
        model.layers[name].select(**choice)
    for block in model.blocks:
        model.skip_block(block, block in config["skipped"])
    model.set_kept_inputs()


def _with_pairs(model: GraphNet, budget: Budget, config: dict, pairs: dict[str, tuple], pick) -> dict:
    """``config`` with each layer of ``pairs`` (name -> (bit options, nonzero options)) at the (bits,
    nonzero) pair ``pick`` (min or max) prefers by the layer's exact cost at the configuration's widths:
    the pairs are costed jointly, as the size is not monotone in s."""
    select_configuration(model, config)
    kept = model.kept_channels()
    layers = dict(config["layers"])
    for name, (bit_options, nonzero_options) in pairs.items():
        layer, kept_in = model.layers[name], kept[model.sources[name][0]]
        bits, nonzero = pick(itertools.product(bit_options, nonzero_options),
                             key=lambda pair: budget.layer_cost(layer, name, kept_in, *pair))
        layers[name] = {**layers[name], "bits": bits, "nonzero": nonzero}
    return {**config, "layers": layers}


def extreme_configuration(model: GraphNet, budget: Budget, smallest: bool) -> dict:
    """The smallest (every width at its minimum, every block skipped, each layer's cheapest (bits, nonzero)
    pair) or largest configuration of the space."""
    pick = min if smallest else max
    searchable = {name: layer for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    widths = {"layers": {name: {"bits": layer.bit_options[0], "nonzero": 1.0, "width": pick(layer.width_options)}
                         for name, layer in searchable.items()},
              "skipped": list(model.blocks) if smallest else []}
    if not budget.compresses:  # bits and sparsity cost no MACs
        return widths
    pairs = {name: (layer.bit_options, layer.nonzero_options) for name, layer in searchable.items()}
    return _with_pairs(model, budget, widths, pairs, pick)


def smallest_configuration(model: GraphNet, budget: Budget, config: dict, options: dict[str, tuple],
                           width_keys: dict) -> dict:
    """The cheapest configuration reachable from ``config`` by the decisions in ``options`` (``node:axis`` ->
    options): widths at their smallest, blocks skipped, each layer's (bits, nonzero) pair the cheapest
    jointly; what no decision moves stays as ``config`` has it."""
    for key, choices in options.items():
        if key.rsplit(":", 1)[1] in ("width", "op"):
            config = with_option(config, key, min(choices), width_keys)
    if not budget.compresses:
        return config
    pairs = {}
    for name, choice in config["layers"].items():
        bit_options = options.get(f"{name}:bits", (choice["bits"],))
        nonzero_options = options.get(f"{name}:nonzero", (choice["nonzero"],))
        if len(bit_options) > 1 or len(nonzero_options) > 1:
            pairs[name] = (bit_options, nonzero_options)
    return _with_pairs(model, budget, config, pairs, min)


def _members(config: dict, node: str, axis: str, width_keys: dict) -> list[str]:
    if axis == "width":
        return [n for n, key_of in width_keys.items() if key_of == node and n in config["layers"]]
    return [node]


def current_option(config: dict, key: str, width_keys: dict) -> float:
    """The option of decision ``key`` (``layer:bits``, ``layer:nonzero``, ``group:width``, ``block:op``) in
    ``config``."""
    node, axis = key.rsplit(":", 1)
    if axis == "op":
        return 0.0 if node in config["skipped"] else 1.0
    return config["layers"][_members(config, node, axis, width_keys)[0]][axis]


def with_option(config: dict, key: str, option: float, width_keys: dict) -> dict:
    """``config`` with decision ``key`` at ``option`` (op: 1.0 keeps the block, 0.0 skips it)."""
    node, axis = key.rsplit(":", 1)
    if axis == "op":
        skipped = [b for b in config["skipped"] if b != node] + ([node] if option == 0.0 else [])
        return {**config, "skipped": skipped}
    names = _members(config, node, axis, width_keys)
    return {**config, "layers": {**config["layers"], **{n: {**config["layers"][n], axis: option} for n in names}}}


def next_option(config: dict, key: str, options: tuple, width_keys: dict, up: bool = False
                ) -> tuple[float, float, dict] | None:
    """(from, to, ``config`` with decision ``key`` moved one of its ``options`` down, or up with ``up``),
    or None at that end of the options (op: 0.0, identity, is below 1.0, the block)."""
    current = current_option(config, key, width_keys)
    further = [o for o in options if (o > current if up else o < current)]
    if not further:
        return None
    option = min(further) if up else max(further)
    return current, option, with_option(config, key, option, width_keys)


def _trial_cost(model: GraphNet, budget: Budget, config: dict, key: str, option: float, width_keys: dict) -> float:
    """The exact cost with decision ``key`` at ``option``: set on the layers (or the block) for the count and
    restored, as nothing else changes."""
    node, axis = key.rsplit(":", 1)
    if axis == "op":
        was = node in model.skipped
        model.skip_block(node, option == 0.0)
        try:
            return budget.exact(model)
        finally:
            model.skip_block(node, was)
    layers = [model.layers[name] for name in _members(config, node, axis, width_keys)]
    saved = [getattr(layer, axis) for layer in layers]
    for layer in layers:
        setattr(layer, axis, option)
    try:
        return budget.exact(model)
    finally:
        for layer, value in zip(layers, saved):
            setattr(layer, axis, value)


def cheaper(model: GraphNet, budget: Budget, config: dict, key: str, options: tuple, width_keys: dict
            ) -> tuple[float, float, dict, float] | None:
    """(from, to, ``config`` with decision ``key`` moved, its exact cost): the option of ``key`` costing the
    most among those that make the configuration strictly cheaper (ties: the smaller option), or None
    where none does. Where the cost falls along the options this is the next option down, as a repair's
    step always was; where it does not (the nonzero fraction at b <= 2) it skips options, or goes up. So
    a move exists whenever any configuration the decisions reach is cheaper: a layer with no cheaper bits
    option is at its smallest bits, and then no pair beats its cheapest nonzero fraction at those bits.
    ``model`` has ``config`` selected."""
    node, axis = key.rsplit(":", 1)
    current = current_option(config, key, width_keys)
    if axis in ("bits", "nonzero"):  # only this layer's cost changes: cost it alone
        if node in model.inactive_layers():
            return None
        layer, choice = model.layers[node], config["layers"][node]
        kept_in = model.kept_channels()[model.sources[node][0]]

        def cost_of(option):
            pair = {"bits": choice["bits"], "nonzero": choice["nonzero"], axis: option}
            return budget.layer_cost(layer, node, kept_in, pair["bits"], pair["nonzero"])
    else:
        def cost_of(option):
            return _trial_cost(model, budget, config, key, option, width_keys)
    now = cost_of(current)
    costs = {option: cost_of(option) for option in options if option != current}
    below = [option for option, value in costs.items() if value < now]
    if not below:
        return None
    option = max(below, key=lambda o: (costs[o], -o))
    after = _trial_cost(model, budget, config, key, option, width_keys)
    return current, option, with_option(config, key, option, width_keys), after


def selected_configuration(model: GraphNet) -> dict:
    """The configuration ``model`` has selected, as ``select_configuration`` takes it."""
    return {"layers": {name: {"bits": layer.bits, "nonzero": layer.nonzero, "width": layer.width}
                       for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)},
            "skipped": [block for block in model.blocks if block in model.skipped]}


def smallest_cost(model: GraphNet, budget: Budget, decisions: dict, width_keys: dict) -> float:
    """The cost of the cheapest configuration the ``decisions`` (``node:axis`` -> a decision with ``options``)
    reach from the selected one, each layer's bits and sparsity costed jointly; the selection is kept."""
    config = selected_configuration(model)
    options = {key: decision.options for key, decision in decisions.items()}
    select_configuration(model, smallest_configuration(model, budget, config, options, width_keys))
    smallest = budget.exact(model)
    select_configuration(model, config)
    return smallest


def repair_configuration(model: GraphNet, budget: Budget, config: dict, decisions: dict, width_keys: dict
                         ) -> tuple[dict, list[str]]:
    """``config`` moved down, one decision at a time, until it meets the budget, and the moves. Each decision
    (``node:axis`` -> a relaxed decision: ``options``, ``probs()``) offers ``cheaper``'s move. Where single
    moves reach the budget, the one losing the least log-probability is taken (so a small overshoot costs
    a small change, not a skipped block); otherwise the one losing the least log-probability per unit of
    cost saved. A move exists while any configuration of the decisions is cheaper, so this ends under the
    budget whenever the decisions' smallest configuration meets it."""
    select_configuration(model, config)
    moves, exact = [], budget.exact(model)
    while exact > budget.limit:
        options = []  # (meets the budget, log-probability lost, cost saved, move, configuration)
        for key, decision in decisions.items():
            moved = cheaper(model, budget, config, key, decision.options, width_keys)
            if moved is None:
                continue
            option_from, option_to, candidate_config, after = moved
            log_pi = decision.probs().detach().clamp_min(1e-12).log()
            lost = float(log_pi[decision.options.index(option_from)] - log_pi[decision.options.index(option_to)])
            options.append((after <= budget.limit, lost, exact - after, f"{key} {option_from:g}->{option_to:g}",
                            candidate_config))
        if not options:  # the decisions' smallest configuration: nothing is cheaper
            break
        finishing = [o for o in options if o[0]]
        best = min(finishing, key=lambda o: o[1]) if finishing else min(options, key=lambda o: o[1] / o[2])
        moves.append(best[3])
        config = best[4]
        select_configuration(model, config)
        exact = budget.exact(model)
    return config, moves
