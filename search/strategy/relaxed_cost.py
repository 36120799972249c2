"""E(z): a budget's cost of S relaxed configurations (the UDC paper's eq. 7), every layer at once.

Per layer the cost is the budget's formula at the expected options sum_k z[k] option_k (``search.cost``:
the size bound n * w_out * w_in * (s * b + H2(s)), MACs at the expected widths; ``search.flash_cost``:
Flash from the measured bytes per element at the relaxed bits and sparsity), times the expected gate of
the block holding it. Written over [S, L] tensors for the L layers, a step costs a few dozen tensor
operations where a loop over layers costs several hundred, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from search import cost
from search.space import SearchableLayer

AXES = ("width_out", "width_in", "bits", "nonzero", "gate")


class RelaxedCost:
    """E(z) of ``budget`` (``budget.Budget``) over ``model``'s searchable layers; ``decisions`` are the search's
    (key -> ``Decision``), ``width_keys`` and ``block_of`` the model's. A key missing from z is the layer's
    selected option (width and gate 1)."""

    def __init__(self, model, decisions, width_keys: dict, block_of: dict, budget):
        self.budget, self.decisions = budget, decisions
        self.names = [name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)]
        self.layers = [model.layers[name] for name in self.names]
        self.keys = []  # per layer: axis -> decision key or None
        for name, layer in zip(self.names, self.layers):
            source_width = width_keys[model.sources[name][0]]
            self.keys.append({
                "width_out": _key(width_keys[name], "width"),
                "width_in": None if layer.op == "dwconv" else _key(source_width, "width"),  # its channels are its input's
                "bits": f"{name}:bits", "nonzero": f"{name}:nonzero",
                "gate": _key(block_of.get(name), "op")})
        self.elements = torch.tensor([float(layer.theta.numel()) for layer in self.layers])
        self.channels = torch.tensor([float(layer.out_channels) for layer in self.layers])
        if budget.kind == "macs":
            self.macs = torch.tensor([float(budget.full_macs(layer, name)) for name, layer in zip(self.names, self.layers)])
        self._tables: tuple | None = None

    def __call__(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """[S]: the cost of each sample's relaxed configuration."""
        present = {key for key in self.decisions if key in z}
        expected = self._expected(z, present)
        if self.budget.kind == "flash":
            flash = self.budget.flash_cost
            c = flash.flash_model.coefficients
            pooled = torch.tensor([float(name in flash.pooled) for name in self.names])
            elements = self.elements * expected["width_out"] * expected["width_in"]
            channels = self.channels * expected["width_out"]
            layers = (c["encoded"] * self._rates(z, present) * elements + c["channels"] * channels
                      + c["pooled"] * channels * pooled)
            return (layers * expected["gate"]).sum(-1) + flash.fixed()
        if self.budget.kind == "size":
            layers = cost.relaxed_layer_size_bits(self.elements, expected["nonzero"], expected["bits"],
                                                  expected["width_out"], expected["width_in"])
        else:
            layers = cost.relaxed_macs(self.macs, expected["width_out"], expected["width_in"])
        return (layers * expected["gate"]).sum(-1)

    def _expected(self, z: dict[str, torch.Tensor], present: set[str]) -> dict[str, torch.Tensor]:
        """axis -> [S, L]: sum_k z[k] option_k per layer, or its default where z has no key."""
        by_size: dict[int, list[str]] = {}
        for key in sorted(present):
            by_size.setdefault(len(self.decisions[key].options), []).append(key)
        samples = max((z[key].shape[0] for key in present), default=1)
        columns, values = {}, []
        for size, keys in by_size.items():
            stacked = torch.stack([z[key].expand(samples, size) for key in keys], 1)
            options = torch.stack([self.decisions[key].values for key in keys])
            values.append((stacked * options).sum(-1))  # [S, D]
            offset = len(columns)
            columns.update((key, offset + index) for index, key in enumerate(keys))
        defaults = {"width_out": 1.0, "width_in": 1.0, "gate": 1.0}
        constants = [1.0] + [layer.bits or 32 for layer in self.layers] + [layer.nonzero for layer in self.layers]
        first = len(columns)
        table = torch.cat([*values, torch.tensor(constants).expand(samples, -1)], 1)
        expected = {}
        for axis in AXES:
            index = []
            for position, keys in enumerate(self.keys):
                key = keys[axis]
                if key in present:
                    index.append(columns[key])
                elif axis in defaults:
                    index.append(first)
                else:
                    index.append(first + 1 + position + (len(self.layers) if axis == "nonzero" else 0))
            expected[axis] = table[:, index]
        return expected

    def _rates(self, z: dict[str, torch.Tensor], present: set[str]) -> torch.Tensor:
        """[S, L] bytes per weight element: sum_ij z_b[i] rate[i, j] z_s[j] per layer, over its relaxed options
        (its selected one where z has no key)."""
        flash = self.budget.flash_cost
        signature = (flash.version, frozenset(key for key in present if not key.endswith((":width", ":op"))),
                     tuple((layer.bits, layer.nonzero) for layer in self.layers))
        if self._tables is None or self._tables[0] != signature:
            self._tables = (signature, self._rate_table(present))
        table = self._tables[1]  # [L, Kb, Ks]
        samples = max((z[key].shape[0] for key in present), default=1)
        z_bits = self._padded(z, present, "bits", table.shape[1], samples)
        z_nonzero = self._padded(z, present, "nonzero", table.shape[2], samples)
        return torch.einsum("slb,lbj,slj->sl", z_bits, table, z_nonzero)

    def _options(self, position: int, axis: str, present: set[str]) -> tuple:
        layer = self.layers[position]
        if self.keys[position][axis] in present:
            return layer.bit_options if axis == "bits" else layer.nonzero_options
        return (layer.bits,) if axis == "bits" else (layer.nonzero,)

    def _rate_table(self, present: set[str]) -> torch.Tensor:
        flash = self.budget.flash_cost
        options = [(self._options(i, "bits", present), self._options(i, "nonzero", present))
                   for i in range(len(self.layers))]
        table = torch.zeros(len(self.layers), max(len(b) for b, _ in options), max(len(s) for _, s in options))
        for position, (name, (bits, nonzero)) in enumerate(zip(self.names, options)):
            for i, b in enumerate(bits):
                for j, s in enumerate(nonzero):
                    table[position, i, j] = flash.rate(name, b, s)
        return table

    def _padded(self, z: dict[str, torch.Tensor], present: set[str], axis: str, width: int,
                samples: int) -> torch.Tensor:
        """[S, L, width]: each layer's z on ``axis`` (one-hot on its selected option without a key), zero-padded."""
        rows = []
        for keys in self.keys:
            key = keys[axis]
            row = z[key] if key in present else torch.ones(1, 1)
            if row.shape[1] < width:
                row = F.pad(row, (0, width - row.shape[1]))
            rows.append(row.expand(samples, width))
        return torch.stack(rows, 1)


def _key(node: str | None, axis: str) -> str | None:
    return None if node is None else f"{node}:{axis}"
