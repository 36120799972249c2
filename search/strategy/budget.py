"""The hard budget of a search and the configurations it is checked on.

``Budget``: a size in bits of compressed weights (the size model's bound) or a MAC count, with the
exact cost of a network's selected configuration; ``select_configuration`` and
``extreme_configuration`` set and find configurations; ``cheaper`` moves one decision one option
towards the cheap (or costly) end, the step of a repair.
"""

from __future__ import annotations

from core.errors import UsageError
from core.size_model import layer_size_bits
from search import cost
from search.space import GraphNet, SearchableLayer


class BudgetWarning(UserWarning):
    """The searched configuration misses its budget, or the budget does not constrain the space."""


class Budget:
    """A hard budget on the compressed size (bits) or on MACs, with exact and relaxed costs of a supernet."""

    def __init__(self, model: GraphNet, budget_bytes: float | None, macs: int | None):
        if (budget_bytes is None) == (macs is None):
            raise UsageError("give exactly one budget: a size in bytes or a MAC count")
        if (budget_bytes if macs is None else macs) <= 0:
            raise UsageError("the budget must be positive")
        self.kind = "size" if macs is None else "macs"
        self.limit = 8.0 * budget_bytes if self.kind == "size" else float(macs)
        self.budget_bytes, self.macs = budget_bytes, macs
        self.sizes = model.output_sizes()

    def describe(self, value: float) -> str:
        return f"{value / 8:.0f} bytes" if self.kind == "size" else f"{value:.0f} MACs"

    def layer_cost(self, layer: SearchableLayer, name: str, kept_in: int) -> float:
        """The exact cost of a layer at its selected options, reading ``kept_in`` channels."""
        kept_out = kept_in if layer.op == "dwconv" else layer.kept_out_channels()
        height, width = self.sizes[name]
        if self.kind == "macs":
            return cost.layer_macs(layer.op, getattr(layer, "kernel", 1), kept_in, kept_out, height, width)
        per_output = layer.theta[0].numel() * (1 if layer.op == "dwconv" else kept_in / layer.in_channels)
        return layer_size_bits(round(kept_out * per_output), layer.nonzero, layer.bits or 32)

    def exact(self, model: GraphNet) -> float:
        """The cost of the selected configuration (skipped blocks cost nothing)."""
        kept = {"input": model.input_shape[2]}
        inactive, total = model.inactive_layers(), 0.0
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


def select_configuration(model: GraphNet, config: dict) -> None:
    """Select ``config`` = {"layers": {name: {bits, nonzero, width}}, "skipped": [block, ...]}."""
    for name, choice in config["layers"].items():
        model.layers[name].select(**choice)
    for block in model.blocks:
        model.skip_block(block, block in config["skipped"])


def extreme_configuration(model: GraphNet, budget: Budget, smallest: bool) -> dict:
    """The smallest (every width at its minimum, every block skipped, the cheapest bits and sparsity) or
    largest configuration of the space; the cost is monotone in every option, so it is the extreme."""
    pick = min if smallest else max
    layers = {}
    for name, layer in model.layers.items():
        if not isinstance(layer, SearchableLayer):
            continue
        if budget.kind == "size":
            bits, nonzero = pick(((b, s) for b in layer.bit_options for s in layer.nonzero_options),
                                 key=lambda o: layer_size_bits(1, o[1], o[0]))
        else:
            bits, nonzero = layer.bit_options[0], 1.0
        layers[name] = {"bits": bits, "nonzero": nonzero, "width": pick(layer.width_options)}
    return {"layers": layers, "skipped": list(model.blocks) if smallest else []}


# ---------------------------------------------------------------- the search



def cheaper(config: dict, key: str, options: tuple, width_keys: dict, up: bool = False
            ) -> tuple[float, float, dict] | None:
    """(from, to, ``config`` with decision ``key`` moved one of its ``options`` towards the cheap end, or
    the costly end with ``up``), or None at that end. Keys: ``layer:bits``, ``layer:nonzero``,
    ``group:width``, ``block:op``."""
    node, axis = key.rsplit(":", 1)
    if axis == "op":
        if (node in config["skipped"]) != up:
            return None
        skipped = [b for b in config["skipped"] if b != node] if up else [*config["skipped"], node]
        return (0.0, 1.0, {**config, "skipped": skipped}) if up else (1.0, 0.0, {**config, "skipped": skipped})
    names = [n for n, key_of in width_keys.items() if key_of == node and n in config["layers"]] \
        if axis == "width" else [node]
    current = config["layers"][names[0]][axis]
    further = [o for o in options if (o > current if up else o < current)]
    if not further:
        return None
    option = min(further) if up else max(further)
    layers = {**config["layers"], **{n: {**config["layers"][n], axis: option} for n in names}}
    return current, option, {**config, "layers": layers}
