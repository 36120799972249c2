"""The UDC step's fast parts against references written here from their definitions: the relaxed weights of
many layers in one autograd node, the network's relaxed forward with width scales and gates moved onto
weights, the relaxed cost of all layers at once, and the projection's Newton iteration. Values and every
gradient must agree."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import synthetic
from search.relaxation import project, projected_log_probabilities
from search.space import make_supernet, quantize
from search.space.relaxed_weight import WeightInputs, quantizer_levels, relaxed_weights
from search.strategy.budget import BudgetWarning
from search.strategy.udc import UDCSearch

BITS = (8, 4, 2, 1)
NONZERO = (1.0, 0.5, 0.25)


def reference_weight(theta, ranges, z_bits, masks, z_nonzero):
    """sum_k z_b[k] Q(theta, b_k, r_k) * sum_j z_s[j] m_j from ``quantize`` option by option (autograd)."""
    quantized = sum(z_bits[:, k].view(-1, *[1] * theta.dim()) * quantize(theta, b, r)
                    for k, (b, r) in enumerate(zip(BITS, ranges)))
    return quantized * (z_nonzero @ masks).view(-1, *theta.shape)


def layer_inputs(shape, samples, seed, held=False):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(*shape, generator=generator).requires_grad_()
    peak = float(theta.detach().abs().max())
    ranges = [torch.tensor(peak * f).requires_grad_() for f in (0.9, 0.5, 1.0, 0.3)]
    if held:  # a range pushed to 0 is held at MIN_RANGE and passes no gradient
        ranges[1] = torch.tensor(0.0).requires_grad_()
    z_bits = torch.softmax(torch.randn(samples, len(BITS), generator=generator), -1)
    z_bits[:, 2] = 0.0  # an option a top-kappa sample leaves out still gets its gradient
    z_bits.requires_grad_()
    z_nonzero = torch.softmax(torch.randn(samples, len(NONZERO), generator=generator), -1).requires_grad_()
    masks = (torch.rand(len(NONZERO), theta.numel(), generator=generator) < torch.tensor(NONZERO)[:, None]).float()
    return theta, ranges, z_bits, masks, z_nonzero


@pytest.mark.parametrize("samples", [1, 3])
def test_relaxed_weights_of_many_layers_equal_the_composed_quantizers_with_every_gradient(samples):
    layers = [layer_inputs(shape, samples, seed, held=seed == 2)
              for seed, shape in enumerate([(8, 3, 3, 3), (16, 8, 1, 1), (8, 1, 3, 3), (10, 16)])]
    fused = relaxed_weights([WeightInputs(theta, ranges, quantizer_levels(BITS), (3,), z_bits, masks, z_nonzero)
                             for theta, ranges, z_bits, masks, z_nonzero in layers])
    upstream = [torch.randn(w.shape, generator=torch.Generator().manual_seed(10 + i)) for i, w in enumerate(fused)]
    leaves = [t for theta, ranges, z_bits, _, z_nonzero in layers for t in (theta, *ranges, z_bits, z_nonzero)]
    fused_grads = torch.autograd.grad(sum((w * g).sum() for w, g in zip(fused, upstream)), leaves)
    reference = [reference_weight(*inputs) for inputs in layers]
    reference_grads = torch.autograd.grad(sum((w * g).sum() for w, g in zip(reference, upstream)), leaves)
    for got, want in zip(fused, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    position = {id(leaf): index for index, leaf in enumerate(leaves)}
    assert fused_grads[position[id(layers[2][1][1])]].item() == 0.0  # the held range
    assert torch.all(fused_grads[position[id(layers[0][2])]][:, 2] != 0.0)  # the zeroed option's gradient


def relaxed_supernet(name, samples, seed):
    torch.manual_seed(seed)
    model = make_supernet(name, (28, 28, 1), 10, batchnorm=False, bit_options=(8, 4, 2),
                          nonzero_options=(1.0, 0.5), width_options=(1.0, 0.75, 0.5))
    generator = torch.Generator().manual_seed(seed)
    leaves = []
    choices = {}
    for layer_name, layer in model.layers.items():
        if not hasattr(layer, "theta"):
            continue
        layer.init_option_ranges()
        choice = {"bits": torch.softmax(torch.randn(samples, 3, generator=generator), -1),
                  "nonzero": torch.softmax(torch.randn(samples, 2, generator=generator), -1)}
        if len(layer.width_options) > 1 and layer.op != "dwconv":
            choice["width"] = torch.softmax(torch.randn(samples, 3, generator=generator), -1)
        choices[layer_name] = {axis: z.requires_grad_() for axis, z in choice.items()}
        leaves += list(choices[layer_name].values())
    for layer_name, layer in model.layers.items():  # a depthwise layer's width is its source's
        if getattr(layer, "op", "") == "dwconv":
            source = model.sources[layer_name][0]
            if "width" in choices.get(source, {}):
                choices[layer_name]["width"] = choices[source]["width"]
    gates = {block: torch.rand(samples, generator=generator).requires_grad_() for block in model.blocks}
    model.relax(choices, gates)
    return model, leaves + list(gates.values()) + [p for p in model.parameters()]


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
@pytest.mark.parametrize("samples", [1, 2])
def test_the_relaxed_network_equals_scales_and_gates_applied_on_the_activations(name, samples):
    """``GraphNet.forward`` moves widths onto readers' and projections' weights and gates onto branches; the
    reference runs every layer on its own, each multiplying its output by its scale and each add its branch by
    the gate (the layers' own relaxed forward). Logits and all gradients agree."""
    model, leaves = relaxed_supernet(name, samples, seed=3)
    images = torch.rand(4 * samples, 28, 28, 1, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(4 * samples) % 10
    fast = model(images)
    reference = model._forward(images.permute(0, 3, 1, 2), None, {}, set())
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    fast_grads = torch.autograd.grad(F.cross_entropy(fast, labels), leaves, allow_unused=True)
    reference_grads = torch.autograd.grad(F.cross_entropy(reference, labels), leaves, allow_unused=True)
    compared = 0
    for got, want in zip(fast_grads, reference_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
            compared += 1
    assert compared > 50


def searched(kind):
    budget = {"budget_bytes": 10 ** 7} if kind == "size" else {"macs": 10 ** 10}
    settings = {"supernet": "mbv2"} if kind == "size" else {"supernet": "mbv2", "mac_compression": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        search = UDCSearch(synthetic(n_train=16, n_test=16), settings=settings, quiet=True, **budget)
    search._build_decisions(search.model)
    return search


def cost_by_layer(search, z):
    """E(z) written as the loop over layers: each layer's size or MACs at the expected options, times its
    block's expected gate; a key missing from z is the selected option (width 1)."""
    model, budget = search.model, search.budget

    def expected(key, default):
        return search.decisions[key].expected(z[key]) if key in z else torch.tensor([default])

    total = 0.0
    for name, layer in model.layers.items():
        if not hasattr(layer, "theta"):
            continue
        width_out = expected(f"{search.width_keys[name]}:width", 1.0)
        width_in = (torch.tensor([1.0]) if layer.op == "dwconv"
                    else expected(f"{search.width_keys[model.sources[name][0]]}:width", 1.0))
        if budget.kind == "size":
            s, b = expected(f"{name}:nonzero", layer.nonzero), expected(f"{name}:bits", layer.bits or 32)
            entropy = torch.where((s > 0) & (s < 1), -(s * s.log2() + (1 - s) * (1 - s).log2()), torch.zeros_like(s))
            cost = layer.theta.numel() * width_out * width_in * (s * b + entropy)
        else:
            cost = budget.full_macs(layer, name) * width_out * width_in
        if name in search.block_of:
            cost = cost * expected(f"{search.block_of[name]}:op", 1.0)
        total = total + cost
    return total


@pytest.mark.parametrize("kind", ["size", "macs"])
@pytest.mark.parametrize("drop", ["", ":width"])
def test_relaxed_cost_of_all_layers_at_once_equals_the_loop_over_layers(kind, drop):
    search = searched(kind)
    generator = torch.Generator().manual_seed(5)
    z = {key: torch.softmax(torch.randn(3, len(d.options), generator=generator), -1).requires_grad_()
         for key, d in search.decisions.items() if not (drop and key.endswith(drop))}
    fast, slow = search.relaxed_cost(search.model, z), cost_by_layer(search, z)
    torch.testing.assert_close(fast, slow.float(), rtol=1e-5, atol=0.0)
    leaves = list(z.values())
    fast_grads = torch.autograd.grad(fast.sum(), leaves, allow_unused=True, materialize_grads=True)
    slow_grads = torch.autograd.grad(slow.sum(), leaves, allow_unused=True, materialize_grads=True)
    assert sum(bool(g.abs().sum() > 0) for g in slow_grads) >= 2  # the gates at least
    for got, want in zip(fast_grads, slow_grads):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-3)


def bisected_peak_temperature(pi: np.ndarray, bound: float) -> float:
    """beta* in [0, 1]: the largest beta with max softmax(beta log pi) <= bound, by 200 halvings."""
    log_ratio = np.log(pi) - np.log(pi).max()
    if 1.0 / np.exp(log_ratio).sum() <= bound:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if 1.0 / np.exp(middle * log_ratio).sum() <= bound else (low, middle)
    return low


@pytest.mark.parametrize("spread", [0.05, 1.0, 8.0])
def test_newton_projection_lands_on_the_bisected_temperature(spread):
    generator = torch.Generator().manual_seed(6)
    pi = torch.softmax(torch.randn(40, 5, generator=generator, dtype=torch.float64) * spread, -1)
    xi = 0.1
    projected = project(pi, xi)
    for row, out in zip(pi.numpy(), projected.numpy()):
        beta = bisected_peak_temperature(row, 1 / 5 + xi)
        expected = np.exp(beta * np.log(row))
        np.testing.assert_allclose(out, expected / expected.sum(), rtol=1e-9, atol=1e-12)
        assert out.max() <= 1 / 5 + xi + 1e-9


def test_projected_log_probabilities_are_the_log_of_the_projected_softmax():
    generator = torch.Generator().manual_seed(7)
    logits = [torch.randn(k, generator=generator) * 3 for k in (5, 4, 2, 5)]
    got = projected_log_probabilities(logits, 0.05)
    want = project([torch.softmax(l.double(), -1) for l in logits], 0.05)
    for g, w, l in zip(got, want, logits):
        assert g.shape == l.shape and g.dtype == l.dtype
        torch.testing.assert_close(g.double().exp(), w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("samples", [1, 2])
def test_a_relaxed_block_after_a_relu_mixes_the_two_options_outputs(samples):
    """The ResNet supernet's adds end in a ReLU: a relaxed depth decision is z[block] * relu(a + f(a)) +
    z[identity] * a, the mixture of the block's output and the identity's (not relu(a + z f(a))). Checked
    on every add of the network, inside its relaxed forward, per sample group."""
    model, _ = relaxed_supernet("resnet", samples, seed=5)
    seen = {}
    for block in model.blocks:
        assert model.layers[block].activation == "relu"
        model.layers[block].register_forward_hook(
            lambda module, inputs, output, block=block: seen.setdefault(block, []).append((inputs, output)))
    images = torch.rand(3 * samples, 28, 28, 1, generator=torch.Generator().manual_seed(6))
    model(images)
    assert set(seen) == set(model.blocks) and model.blocks
    for block, calls in seen.items():
        gate = model.layers[block].gate.detach()
        assert len(calls) == samples  # one call per sample group
        for index, ((a, b), output) in enumerate(calls):
            g = gate[index]
            want = g * F.relu(a + b) + (1 - g) * a
            torch.testing.assert_close(output, want, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(output, F.relu(a + g * b), atol=1e-4)


def test_a_linear_add_keeps_its_gate_on_the_branch_and_unas_dropout_keeps_the_mixture():
    """A linear add (MobileNetV2's) relaxes to a + z f(a), the same mixture; the shortcut's dropout during
    a search removes only the identity option's share, after a ReLU too."""
    from search.space.fixed_layers import Add

    a = torch.rand(2, 3, 4, 4) - 0.2
    b = torch.randn(2, 3, 4, 4)
    gate = torch.tensor([0.3, 0.8])
    linear = Add("none")
    linear.gate = gate
    want = torch.stack([g * (a[i] + b[i]) + (1 - g) * a[i] for i, g in enumerate(gate)])
    torch.testing.assert_close(linear(a, b), want)
    relu = Add("relu")
    relu.gate = gate
    relu.shortcut_scale = 1.0 - (1.0 - gate) * torch.tensor([1.0, 0.0])  # sample 0's shortcut dropped
    got = relu(a, b)
    torch.testing.assert_close(got[0], gate[0] * F.relu(a[0] + b[0]))
    torch.testing.assert_close(got[1], gate[1] * F.relu(a[1] + b[1]) + (1 - gate[1]) * a[1])
