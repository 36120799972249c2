"""How a relaxed ``GraphNet`` runs its S samples: every relaxed layer's parameters per sample, with the
multipliers of the relaxation moved from activations onto weights wherever that is exact.

A relaxed width multiplies a layer's output channels by sum_k z_w[k] mask_k, and a relaxed block gate
multiplies its branch: on the activations, each is a pass over the largest tensors of the step, forward
and backward. Both move onto the weights (a few thousand numbers) without changing the function:

- onto the readers: when every reader of a layer's output is a relaxed searchable layer (through a global
  pool, which averages each channel), each reader multiplies its weight's input channels by the scale,
  as a convolution is linear in each input channel (zero padding included);
- onto the layer's own weight and bias: when it has no activation (a projection), so the output is linear
  in them; a block's gate too, when such a layer is the branch, the add its only reader and the add
  linear (after a ReLU the gate mixes the two options' outputs, ``fixed_layers.Add``).

Everything else keeps its multiplier on the output (``SampleParameters.scale``).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from search.space.fixed_layers import Add, GlobalAveragePool
from search.space.layers import SearchableLayer
from search.space.relaxed_weight import SampleParameters, WeightInputs, relaxed_weights


def relaxed_samples(net) -> int:
    """S of the network's relaxed choices and gates; 1 when nothing is relaxed."""
    return max((layer.relaxed_samples() for layer in net.layers.values() if isinstance(layer, (SearchableLayer, Add))),
               default=1)


def is_relaxed(net) -> bool:
    return any(isinstance(layer, SearchableLayer) and layer.relaxed or
               isinstance(layer, Add) and (layer.gate is not None or layer.shortcut_scale is not None)
               for layer in net.layers.values())


def sample_parameters(net, samples: int) -> tuple[dict[str, list[SampleParameters]], set[str]]:
    """Per relaxed layer, its ``samples`` SampleParameters; and the adds whose gate a branch's weights carry."""
    relaxed = {name: layer for name, layer in net.layers.items() if isinstance(layer, SearchableLayer) and layer.relaxed}
    readers = defaultdict(list)
    for name, sources in net.sources.items():
        for source in sources:
            readers[source].append(name)
    scale_after = {name: layer.output_scale() for name, layer in relaxed.items()}
    input_scale: dict[str, torch.Tensor] = {}
    factor: dict[str, torch.Tensor] = {}
    for name, scale in list(scale_after.items()):
        if scale is None:
            continue
        targets = _linear_readers(net, name, readers, relaxed)
        if targets:
            input_scale.update((target, scale) for target in targets)
            scale_after[name] = None
        elif relaxed[name].activation == "none":
            factor[name], scale_after[name] = scale, None
    gated = set()
    for name, layer in net.layers.items():
        branch = net.sources[name][-1]
        if (isinstance(layer, Add) and layer.gate is not None and layer.activation == "none" and branch in relaxed
                and relaxed[branch].activation == "none" and readers[branch] == [name]):
            gate = layer.gate.unsqueeze(1)  # [S, 1]: every channel of the branch
            factor[branch] = gate if branch not in factor else factor[branch] * gate
            gated.add(name)
    weights = _weights(relaxed)
    parameters = {name: layer.sample_parameters(samples, input_scale.get(name), factor.get(name), scale_after[name],
                                                weights.get(name))
                  for name, layer in relaxed.items()}
    return parameters, gated


def _weights(relaxed: dict[str, SearchableLayer]) -> dict[str, torch.Tensor]:
    """Every relaxed layer's ``relaxed_weights()``, layers of one signature in one call (float layers apart)."""
    groups: dict[tuple, list[tuple[str, WeightInputs]]] = defaultdict(list)
    for name, layer in relaxed.items():
        inputs = layer.weight_inputs()
        if inputs is not None:
            groups[inputs.signature()].append((name, inputs))
    weights = {}
    for members in groups.values():
        weights.update(zip((name for name, _ in members), relaxed_weights([inputs for _, inputs in members])))
    return weights


def _linear_readers(net, name: str, readers: dict[str, list[str]], relaxed: dict) -> list[str]:
    """The relaxed searchable layers that read ``name``'s output (through global pools), or [] if anything
    else reads it (an add, the network's output)."""
    found = []
    for reader in readers.get(name, []):
        if isinstance(net.layers[reader], GlobalAveragePool):
            below = _linear_readers(net, reader, readers, relaxed)
            if not below:
                return []
            found += below
        elif reader in relaxed:
            found.append(reader)
        else:
            return []
    return found
