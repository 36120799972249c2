"""``GraphNet``: named layers in execution order, each reading earlier outputs by name, which is exactly
the graph a candidate spec describes. It takes images NHWC (as ``core.data`` yields them) and works NCHW
inside."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from search.space import relaxed_plan
from search.space.fixed_layers import Add
from search.space.layers import SearchableConv2d, SearchableDepthwiseConv2d, SearchableLayer
from search.space.relaxed_weight import sample_groups

class GraphNet(nn.Module):
    """Named layers in execution order; ``sources[name]`` lists the outputs a layer reads ("input" = the image)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, architecture: str = "graph"):
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self.architecture = architecture
        self.layers = nn.ModuleDict()
        self.sources: dict[str, tuple[str, ...]] = {}
        # Residual blocks that may be replaced by the identity (depth search): add name -> branch layers.
        self.blocks: dict[str, tuple[str, ...]] = {}
        self.skipped: set[str] = set()

    def append(self, name: str, layer: nn.Module, *sources: str) -> str:
        known = {"input", *self.layers}
        if name in known:
            raise ValueError(f"layer name {name!r} is already used")
        if not sources or any(s not in known for s in sources):
            raise ValueError(f"layer {name!r} reads {sources}, which are not earlier layers")
        self.layers[name] = layer
        self.sources[name] = sources
        return name

    def forward(self, images_nhwc: torch.Tensor) -> torch.Tensor:
        """The logits. Relaxed with S samples (``relax``), the batch holds S equal groups of images, group i
        under sample i's choices; the groups run through the network one after the other (on CPU faster than
        one batch through grouped convolutions), with the parameters ``relaxed_plan`` gives each sample."""
        images = images_nhwc.permute(0, 3, 1, 2)
        if not relaxed_plan.is_relaxed(self):
            return self._forward(images, None, {}, set())
        samples = relaxed_plan.relaxed_samples(self)
        groups = sample_groups(images, samples)
        parameters, gated = relaxed_plan.sample_parameters(self, samples)
        if samples == 1:
            return self._forward(images, 0, parameters, gated)
        return torch.cat([self._forward(group, i, parameters, gated) for i, group in enumerate(groups)])

    def _forward(self, images: torch.Tensor, sample: int | None, parameters: dict, gated: set[str]) -> torch.Tensor:
        outputs = {"input": images}
        inactive = self.inactive_layers()
        for name, layer in self.layers.items():
            if name in self.skipped:
                outputs[name] = outputs[self.sources[name][0]]
            elif name not in inactive:
                inputs = [outputs[s] for s in self.sources[name]]
                if name in parameters:
                    outputs[name] = layer(*inputs, parameters=parameters[name][sample])
                elif isinstance(layer, Add) and sample is not None:
                    outputs[name] = layer(*inputs, sample=sample, gated=name in gated)
                else:
                    outputs[name] = layer(*inputs)
        return outputs[name]

    def skip_block(self, add_name: str, skip: bool = True) -> None:
        """Replace a residual block by the identity (or restore it): its add passes the shortcut through."""
        if add_name not in self.blocks:
            raise ValueError(f"{add_name!r} is not a skippable block; blocks: {', '.join(self.blocks) or 'none'}")
        if skip:
            self.skipped.add(add_name)
        else:
            self.skipped.discard(add_name)

    def inactive_layers(self) -> set[str]:
        return {name for block in self.skipped for name in self.blocks[block]}

    def block_of(self) -> dict[str, str]:
        """layer name -> the skippable block whose branch holds it."""
        return {name: block for block, names in self.blocks.items() for name in names}

    def width_keys(self) -> dict[str, str | None]:
        """Every node's width decision: layers whose kept widths must agree share a key. A depthwise layer,
        an add, a pool take their input's; the inputs of an add are merged (residual chains slice as one);
        None where the width is always 1 (the image, a layer with no width option below 1)."""
        parent: dict[str, str] = {}

        def root(key):
            while parent.get(key, key) != key:
                key = parent[key]
            return key

        keys: dict[str, str | None] = {"input": None}
        for name, layer in self.layers.items():
            sources = self.sources[name]
            if isinstance(layer, SearchableLayer) and layer.op != "dwconv":
                keys[name] = name if any(w < 1.0 for w in layer.width_options) else None
            elif isinstance(layer, Add):
                first, second = (keys[s] for s in sources)
                if (first is None) != (second is None):
                    raise ValueError(f"{name}: adds a fixed-width input to a searchable-width one")
                if first is not None and root(first) != root(second):
                    parent[root(second)] = root(first)
                keys[name] = first
            else:
                keys[name] = keys[sources[0]]
        return {name: None if key is None else root(key) for name, key in keys.items()}

    def relax(self, choices: dict[str, dict[str, torch.Tensor]] | None = None,
              gates: dict[str, torch.Tensor] | None = None) -> None:
        """Relaxed choices per layer name ({"bits"|"nonzero"|"width": [S, K]}) and block gates ([S], the
        weight of the block against the identity); layers and blocks not named keep their selection.
        ``relax()`` returns every layer and block to its selection."""
        choices, gates = choices or {}, gates or {}
        for name, layer in self.layers.items():
            if isinstance(layer, SearchableLayer):
                layer.relax(**choices.get(name, {}))
            elif isinstance(layer, Add):
                layer.gate, layer.shortcut_scale = gates.get(name), None

    def output_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of every convolution's output; (1, 1) for vectors."""
        sizes = {"input": tuple(self.input_shape[:2])}
        for name, layer in self.layers.items():
            before = sizes[self.sources[name][0]]
            if isinstance(layer, (SearchableConv2d, SearchableDepthwiseConv2d)):
                sizes[name] = tuple(math.ceil(d / layer.stride) for d in before)
            elif isinstance(layer, Add):
                sizes[name] = before
            else:
                sizes[name] = (1, 1)
        return sizes

    def searchable_layers(self) -> list[SearchableLayer]:
        return [layer for layer in self.layers.values() if isinstance(layer, SearchableLayer)]

    def select(self, bits: int | None = None, nonzero: float = 1.0, width: float = 1.0) -> None:
        """The same choice for every searchable layer (uniform compression)."""
        for layer in self.searchable_layers():
            layer.select(bits=bits, nonzero=nonzero, width=width)
        self.set_kept_inputs()

    def kept_channels(self) -> dict[str, int]:
        """Channels each node's output keeps at the selected widths: a layer its own kept count; a depthwise
        layer, an add (a skipped block's too) and a pool their first input's."""
        kept = {"input": self.input_shape[2]}
        for name, layer in self.layers.items():
            own = isinstance(layer, SearchableLayer) and layer.op != "dwconv"
            kept[name] = layer.kept_out_channels() if own else kept[self.sources[name][0]]
        return kept

    def set_kept_inputs(self) -> None:
        """Tell every searchable layer how many input channels its source keeps, so its masks and ranges
        cover the slice the selected widths deploy."""
        kept = self.kept_channels()
        for name, layer in self.layers.items():
            if isinstance(layer, SearchableLayer):
                layer.kept_in = kept[self.sources[name][0]]

    def refresh_masks(self, nonzero: float | None = None) -> None:
        self.set_kept_inputs()
        for layer in self.searchable_layers():
            layer.refresh_mask(nonzero)

    def init_ranges(self) -> None:
        self.set_kept_inputs()
        for layer in self.searchable_layers():
            layer.init_range()

    def fold_batchnorm(self) -> None:
        for layer in self.searchable_layers():
            layer.fold_batchnorm()
