"""``DecisionSpace``: the decisions a search makes over a supernet, keyed by (node, axis), in one place.

The axes: ``bits`` and ``nonzero`` per searchable layer, ``width`` per width group (layers whose kept
widths must agree share one decision, named after the group), ``op`` per skippable residual block
(block kept or identity). ``DecisionSpace.of`` reads them off a supernet; each search takes the space
in the form it works with: relaxed ``Decision``s with learnable logits (UDC and vanilla DNAS, and the
peers, which express what they learned as such decisions for gamma(pi), the repair and the report),
or plain option lists to draw from (random search). The order of the decisions is part of a search's
behaviour (it fixes how random numbers are consumed), so the two orders in use are named.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from search.relaxation import Decision
from search.space import GraphNet, SearchableLayer

OP_OPTIONS = (1.0, 0.0)  # block kept, identity: the expected option is the block's gate


def decision_key(node: str, axis: str) -> str:
    """``node:axis``, the name a decision goes by in searches, reports and the spec's ``pi``."""
    return f"{node}:{axis}"


def shared_width_options(model: GraphNet, keys: dict) -> dict[str, tuple[float, ...]]:
    """Width group -> its width options, which every member layer must share."""
    options = {}
    for name, layer in model.layers.items():
        key = keys[name]
        if isinstance(layer, SearchableLayer) and key is not None:
            if options.setdefault(key, layer.width_options) != layer.width_options:
                raise ValueError(f"{name}: width options {layer.width_options} differ from its group's {options[key]}")
    return options


class DecisionSpace:
    """Ordered ``node:axis`` -> options of a supernet's decisions."""

    def __init__(self, options: dict[str, tuple]):
        self.options = dict(options)

    @classmethod
    def of(cls, model: GraphNet, *, by_layer: bool = False, single_options: bool = True,
           op_options: Sequence[float] = OP_OPTIONS, without: Sequence[str] = ()) -> "DecisionSpace":
        """The supernet's decisions. By axis (``by_layer=False``): every layer's bits and nonzero, then the
        width groups, then the blocks; by layer: each layer's bits, nonzero and its group's width in turn,
        then the blocks. ``single_options=False`` leaves out bits and nonzero decisions with one option;
        ``without`` leaves out the bits or nonzero decisions altogether (axes a search holds fixed)."""
        keys = model.width_keys()
        widths = shared_width_options(model, keys)
        options: dict[str, tuple] = {}
        for name, layer in model.layers.items():
            if not isinstance(layer, SearchableLayer):
                continue
            for axis, choices in (("bits", layer.bit_options), ("nonzero", layer.nonzero_options)):
                if axis not in without and (single_options or len(choices) > 1):
                    options[decision_key(name, axis)] = tuple(choices)
            if by_layer and keys[name] is not None:
                options.setdefault(decision_key(keys[name], "width"), widths[keys[name]])
        if not by_layer:
            options.update({decision_key(group, "width"): choices for group, choices in widths.items()})
        options.update({decision_key(block, "op"): tuple(op_options) for block in model.blocks})
        return cls(options)

    def relaxed(self, logits: dict[str, torch.Tensor] | None = None) -> torch.nn.ModuleDict:
        """A ``Decision`` per decision, uniform or with the given logits (a peer's learned distribution)."""
        decisions = {}
        for key, choices in self.options.items():
            decision = Decision(choices)
            if logits is not None and key in logits:
                decision.logits.data.copy_(logits[key])
            decisions[key] = decision
        return torch.nn.ModuleDict(decisions)
