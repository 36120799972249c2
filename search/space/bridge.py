"""The bridge between a network and the candidate contract: ``to_candidate`` writes the network at its
selected options (weights at their deployed values), ``build_torch`` rebuilds a network from a
candidate."""

from __future__ import annotations

import numpy as np
import torch

from core.candidate import FORMAT, Candidate, layer_shapes, validate
from search.space.graph import GraphNet
from search.space.fixed_layers import Add, GlobalAveragePool
from search.space.layers import SearchableConv2d, SearchableDense, SearchableDepthwiseConv2d, SearchableLayer

FLOAT_BITS = 32  # how a layer without quantization is recorded in a spec

# torch layout -> Keras layout, and back
_TO_KERAS = {"conv": (2, 3, 1, 0), "dwconv": (2, 3, 0, 1), "dense": (1, 0)}
_FROM_KERAS = {"conv": (3, 2, 0, 1), "dwconv": (2, 3, 0, 1), "dense": (1, 0)}


def to_candidate(model: GraphNet, name: str, meta: dict | None = None) -> Candidate:
    """The model at its selected options as a candidate: weights at their deployed values Q(theta)*m,
    channels removed by the width choice sliced away physically (downstream inputs too).

    BatchNorm must already be folded. Raises ValueError where slicing cannot be exact: a residual
    add of different kept widths, a depthwise layer whose width differs from its input's, or an
    output layer that drops classes.
    """
    if any(layer.batchnorm is not None for layer in model.searchable_layers()):
        raise ValueError("fold BatchNorm (model.fold_batchnorm()) before making a candidate")
    kept = {"input": model.input_shape[2]}
    layers, weights = [], {}
    alias = {"input": "input"}  # a skipped block's add stands for its shortcut
    inactive = model.inactive_layers()
    for layer_name, layer in model.layers.items():
        if layer_name in inactive:
            continue
        if layer_name in model.skipped:
            alias[layer_name] = alias[model.sources[layer_name][0]]
            continue
        sources = tuple(alias[s] for s in model.sources[layer_name])
        alias[layer_name] = layer_name
        if isinstance(layer, Add):
            widths = {kept[s] for s in sources}
            if len(widths) != 1:
                raise ValueError(f"{layer_name}: adds inputs with different kept widths {sorted(widths)}; "
                                 "choose one width for every layer of a residual chain")
            kept[layer_name] = kept[sources[0]]
            layers.append({"name": layer_name, "op": "add", "inputs": list(sources), "activation": layer.activation})
            continue
        source = sources[0]
        if isinstance(layer, GlobalAveragePool):
            kept[layer_name] = kept[source]
            layers.append({"name": layer_name, "op": "gap", "input": source})
            continue
        kept_in, kept_out = kept[source], layer.kept_out_channels()
        if layer.op == "dwconv" and kept_out != kept_in:
            raise ValueError(f"{layer_name}: depthwise layer keeps {kept_out} channels but its input keeps {kept_in}; "
                             "give it the same width as the layer before it")
        weight = _deployed_weight(layer)
        sliced = weight[:kept_out] if layer.op == "dwconv" else weight[:kept_out, :kept_in]
        if np.count_nonzero(sliced) == 0:
            raise ValueError(f"{layer_name}: every deployed weight is zero (range {layer.deployed_range():.3g} "
                             f"too wide for {layer.bits} bits); re-initialise ranges or finetune longer")
        kept[layer_name] = kept_out
        entry = {"name": layer_name, "op": layer.op, "input": source}
        if layer.op != "dense":
            entry.update(kernel=layer.kernel, stride=layer.stride)
        if layer.op != "dwconv":
            entry["out_channels"] = kept_out
        entry.update(activation=layer.activation, bits=layer.bits or FLOAT_BITS,
                     nonzero=np.count_nonzero(sliced) / sliced.size, width=layer.width,
                     range=layer.deployed_range(), offset=layer.deployed_offset())
        layers.append(entry)
        weights[f"{layer_name}.weight"] = np.ascontiguousarray(sliced.transpose(_TO_KERAS[layer.op]))
        weights[f"{layer_name}.bias"] = layer.bias.detach().cpu().numpy()[:kept_out].astype(np.float32)
    if kept[alias[layer_name]] != model.num_classes:
        raise ValueError(f"the output layer keeps {kept[layer_name]} of {model.num_classes} classes; give it width 1.0")
    spec = {"format": FORMAT, "name": name, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
            "layers": layers, "meta": dict(meta or {})}
    candidate = Candidate(spec, weights)
    validate(candidate, where=f"candidate {name}")
    return candidate


def _deployed_weight(layer: SearchableLayer) -> np.ndarray:
    if layer.nonzero < 1.0 and layer.mask is None:
        raise ValueError(f"a layer selects nonzero={layer.nonzero} but has no mask; call refresh_masks() first")
    return layer.deployed_weight().cpu().numpy().astype(np.float32)


def build_torch(candidate: Candidate) -> GraphNet:
    """A float torch network (NHWC input) computing exactly what the candidate spec describes with its
    weights as stored: no quantization or masking is applied again."""
    spec = candidate.spec
    validate(candidate, where=f"candidate {candidate.name}")
    shapes = layer_shapes(spec)
    net = GraphNet(spec["input_shape"], spec["num_classes"], spec.get("meta", {}).get("supernet", "candidate"))
    previous = "input"
    for entry in spec["layers"]:
        layer_name, op = entry["name"], entry["op"]
        activation = entry.get("activation", "none")
        if op == "add":
            net.append(layer_name, Add(activation), *entry["inputs"])
        else:
            source = entry.get("input", previous)
            in_channels = shapes[source][-1]
            if op == "gap":
                layer = GlobalAveragePool()
            elif op == "conv":
                layer = SearchableConv2d(in_channels, entry["out_channels"], entry["kernel"], entry["stride"],
                                         activation=activation)
            elif op == "dwconv":
                layer = SearchableDepthwiseConv2d(in_channels, entry["kernel"], entry["stride"], activation=activation)
            else:
                layer = SearchableDense(in_channels, entry["out_channels"], activation=activation)
            if op != "gap":
                with torch.no_grad():
                    keras_weight = torch.from_numpy(np.asarray(candidate.weights[f"{layer_name}.weight"], np.float32))
                    layer.theta.copy_(keras_weight.permute(_FROM_KERAS[op]))
                    layer.bias.copy_(torch.from_numpy(np.asarray(candidate.weights[f"{layer_name}.bias"], np.float32)))
            net.append(layer_name, layer, source)
        previous = layer_name
    return net.eval()
