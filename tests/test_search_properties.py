"""Rules of the search side that hold for every input, checked on generated ones: the quantizer Q and the
Q-hat number format, the projection of eq. 8, and the size and MAC models against enumeration and
against sums over the real supernets' layer shapes."""

import functools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data import synthetic
from core.size_model import binary_entropy, layer_size_bits
from search.cost import relaxed_binary_entropy
from search.relaxation import project
from search.space import Add, GlobalAveragePool, SearchableDense, SearchableLayer, quantize
from search.strategy.budget import BudgetWarning, select_configuration
from search.strategy.udc import UDCSearch


def entropy_bits(s: float) -> float:
    """H2(s) from its definition."""
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


finite32 = st.floats(-50.0, 50.0, width=32, allow_subnormal=False)
thetas = st.lists(finite32, min_size=1, max_size=64).map(lambda values: torch.tensor(values, dtype=torch.float32))
ranges = st.floats(2.0 ** -10, 20.0, width=32)
bit_widths = st.integers(1, 8)


# ---------------------------------------------------------------- the quantizer Q(theta, b, r)


@settings(max_examples=80)
@given(theta=thetas, bits=bit_widths, r=ranges)
def test_quantizer_takes_at_most_its_levels_symmetric_within_range_and_idempotent(theta, bits, r):
    """b > 1: values on the grid k*d, d = r / (2^(b-1) - 1), |k| <= 2^(b-1) - 1 (at most 2^b - 1 levels,
    0 among them), each the level nearest clip(theta, -r, r). b = 1: +-r by the sign of theta. Always
    Q(-theta) = -Q(theta), |Q| <= r and Q(Q(theta)) = Q(theta)."""
    value_range = torch.tensor(r)
    q = quantize(theta, bits, value_range)
    assert q.abs().max() <= r * (1 + 1e-6)
    assert torch.equal(quantize(-theta, bits, value_range), -q)
    assert torch.equal(quantize(q, bits, value_range), q)
    levels = set(q.tolist())
    if bits == 1:
        nonzero = theta != 0
        assert torch.equal(q[nonzero], torch.where(theta[nonzero] > 0, value_range, -value_range))
        assert (q[~nonzero] == 0).all()  # an exact zero stays zero
        return
    largest_code = 2 ** (bits - 1) - 1
    step = r / largest_code
    codes = q.double() / step
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.round().abs().max() <= largest_code
    assert len(levels) <= 2 ** bits - 1
    clipped = theta.double().clamp(-r, r)
    assert ((q.double() - clipped).abs() <= step / 2 * (1 + 1e-5) + 1e-6).all()


@settings(max_examples=40)
@given(seed=st.integers(0, 2 ** 16), bits=bit_widths, nonzero=st.sampled_from([0.2, 0.35, 0.5, 0.7, 0.9]),
       shape=st.tuples(st.integers(2, 8), st.integers(2, 8)))
def test_q_hat_keeps_at_most_two_to_the_b_nonzero_values(seed, bits, nonzero, shape):
    """Q-hat quantizes the magnitude beyond the pruning boundary beta: a kept weight is sign(theta) * (beta +
    k*d), 0 <= k <= 2^(b-1) - 1 (b = 1: beta + r), so a layer holds at most 2^b nonzero values and the
    pruned ones are exact zeros; the deployed int8 tensor keeps that count on its symmetric grid."""
    layer = SearchableDense(shape[1], shape[0], bit_options=(bits,), nonzero_options=(nonzero,))
    with torch.no_grad():
        layer.theta.copy_(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))
    layer.select(bits=bits, nonzero=nonzero)
    layer.pruning_offset = True
    layer.refresh_mask()
    layer.init_range()
    theta = layer.theta.detach().numpy().astype(np.float64)
    magnitude = np.abs(theta).ravel()
    keep = min(magnitude.size, max(1, round(nonzero * magnitude.size)))
    order = np.argsort(-magnitude)
    kept = np.zeros(magnitude.size, bool)
    kept[order[:keep]] = True
    kept = kept.reshape(theta.shape)
    beta = magnitude[order[keep]] if keep < magnitude.size else 0.0

    with torch.no_grad():
        weight = layer.compressed_weight(noise=False).numpy().astype(np.float64)
    r = float(layer.ranges[str(bits)].detach())
    assert np.all(weight[~kept] == 0)
    assert np.all(weight[kept] * np.sign(theta[kept]) >= 0)  # 0 only at beta = 0, nothing pruned
    beyond = np.abs(weight[kept]) - beta
    if bits == 1:
        np.testing.assert_allclose(beyond, r, rtol=1e-5)
    else:
        step = r / (2 ** (bits - 1) - 1)
        codes = beyond / step
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        assert np.round(codes).min() >= 0 and np.round(codes).max() <= 2 ** (bits - 1) - 1
    assert len(np.unique(weight[weight != 0])) <= 2 ** bits

    deployed = layer.deployed_weight().numpy().astype(np.float64)
    assert np.all(deployed[~kept] == 0)
    assert len(np.unique(deployed[deployed != 0])) <= 2 ** bits
    int8_step = np.abs(deployed).max() / 127
    np.testing.assert_allclose(deployed / int8_step, np.round(deployed / int8_step), atol=1e-3)


# ---------------------------------------------------------------- projection (eq. 8)

logit_lists = st.lists(st.floats(-8.0, 8.0), min_size=2, max_size=10)


@settings(max_examples=60)
@given(logits=logit_lists, scale=st.sampled_from([0.3, 1.0, 3.0]), xi=st.floats(0.0, 1.0))
def test_projection_is_the_mildest_tempering_that_meets_the_bound(logits, scale, xi):
    """P_S(pi) = pi^beta / Z for one beta in [0, 1]: positive, summing to 1, max <= 1/K + xi, on the bound
    when pi was over it, the order of pi (so its argmax) kept; a pi already in S is returned unchanged, so
    projecting twice is projecting once."""
    pi = torch.softmax(torch.tensor(logits) * scale, -1)
    size = pi.numel()
    bound = 1 / size + xi
    projected = project(pi, xi)
    assert (projected > 0).all()
    assert float(projected.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(projected.max()) <= bound + 1e-5
    if float(pi.max()) > bound + 1e-5:
        assert float(projected.max()) == pytest.approx(bound, abs=1e-5)
    elif float(pi.max()) <= bound:
        assert torch.equal(projected, pi)
    assert torch.equal(project(projected, xi), projected)
    assert float(projected[int(pi.argmax())]) == float(projected.max())
    larger = pi.unsqueeze(1) > pi.unsqueeze(0)  # [i, j]: pi_i > pi_j
    assert (projected.unsqueeze(1) >= projected.unsqueeze(0))[larger].all()
    # log P - mean log P = beta (log pi - mean log pi), one beta for every option
    centred_pi = pi.double().log() - pi.double().log().mean()
    centred = projected.double().log() - projected.double().log().mean()
    if float(centred_pi.abs().max()) > 1e-3:
        beta = float((centred * centred_pi).sum() / (centred_pi * centred_pi).sum())
        assert -1e-4 <= beta <= 1 + 1e-4
        assert torch.allclose(centred, beta * centred_pi, atol=2e-4)


# ---------------------------------------------------------------- the size model


@settings(max_examples=100)
@given(elements=st.integers(1, 10 ** 6), nonzero=st.floats(0.0, 1.0), bits=st.integers(1, 32))
def test_layer_size_is_elements_times_bits_per_weight(elements, nonzero, bits):
    """eps = N * (s*b + H2(s))."""
    assert layer_size_bits(elements, nonzero, bits) == pytest.approx(
        elements * (nonzero * bits + entropy_bits(nonzero)), rel=1e-12, abs=1e-9)


@settings(max_examples=100)
@given(s=st.floats(0.0, 1.0))
def test_binary_entropy_is_symmetric_and_peaks_at_one_half(s):
    """H2(s) = H2(1 - s), 0 <= H2 <= 1 = H2(1/2), 0 at s in {0, 1}; the tensor version agrees."""
    assert binary_entropy(s) == pytest.approx(entropy_bits(s), abs=1e-12)
    assert binary_entropy(s) == pytest.approx(binary_entropy(1 - s), abs=1e-12)
    assert 0.0 <= binary_entropy(s) <= 1.0
    relaxed = relaxed_binary_entropy(torch.tensor([s, 0.0, 0.5, 1.0], dtype=torch.float64))
    assert relaxed.tolist()[1:] == [0.0, 1.0, 0.0]
    assert float(relaxed[0]) == pytest.approx(entropy_bits(s), abs=1e-4)  # log2 clamped at 1e-6 from the ends


def test_layer_size_bounds_the_count_of_weight_tensors():
    """A layer of N weights with k nonzero b-bit values is one of C(N, k) * 2^(kb) tensors: the size model
    is at least log2 of that count and exceeds it by at most log2(N + 1) bits (the entropy bound's slack)."""
    for elements in range(1, 41):
        for kept in range(elements + 1):
            for bits in (1, 2, 4, 8):
                count_bits = math.log2(math.comb(elements, kept)) + kept * bits
                size = layer_size_bits(elements, kept / elements, bits)
                assert count_bits - 1e-9 <= size <= count_bits + math.log2(elements + 1) + 1e-9


# ---------------------------------------------------------------- relaxed costs on the real supernets


@functools.lru_cache(maxsize=None)
def searched_space(supernet: str, kind: str) -> UDCSearch:
    """A search over the real supernet with its decisions built (no training: costs only)."""
    budget = {"budget_bytes": 10 ** 7} if kind == "size" else {"macs": 10 ** 10}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)  # a budget above the space: costs are all that is used
        search = UDCSearch(synthetic(n_train=16, n_test=16), settings={"supernet": supernet}, quiet=True, **budget)
    search._build_decisions(search.model)
    return search


def costs_by_hand(model, config: dict, masked: bool = True) -> tuple[float, int]:
    """(size bits, MACs) of a configuration, summed over the layer shapes: a conv keeps w*C_out filters of
    k*k*C_in' weights, a depthwise conv k*k weights per kept input channel, the classifier C_in' * classes;
    each weight multiplies once per output pixel (TF SAME: H_out = ceil(H_in / stride)); a skipped block's
    layers cost nothing and its add passes the shortcut on. A layer of N weights keeps round(s*N) of them
    (at least one), as its mask does; ``masked=False`` takes the nominal fraction s itself."""
    skipped_layers = {name for block in config["skipped"] for name in model.blocks[block]}
    channels = {"input": model.input_shape[2]}
    pixels = {"input": tuple(model.input_shape[:2])}
    size, macs = 0.0, 0
    for name, layer in model.layers.items():
        source = model.sources[name][0]
        if name in skipped_layers:
            continue
        if isinstance(layer, (Add, GlobalAveragePool)):
            channels[name] = channels[source]
            pixels[name] = pixels[source] if isinstance(layer, Add) else (1, 1)
            continue
        assert isinstance(layer, SearchableLayer)
        choice = config["layers"][name]
        inputs = channels[source]
        if layer.op == "dense":
            outputs, weights, pixels[name] = layer.out_channels, inputs * layer.out_channels, (1, 1)
        else:
            pixels[name] = tuple(math.ceil(d / layer.stride) for d in pixels[source])
            if layer.op == "dwconv":
                outputs, weights = inputs, layer.kernel ** 2 * inputs
            else:
                outputs = choice["width"] * layer.out_channels
                assert outputs == int(outputs)  # the space's widths keep whole channels
                outputs = int(outputs)
                weights = layer.kernel ** 2 * inputs * outputs
        channels[name] = outputs
        nonzero = min(weights, max(1, round(choice["nonzero"] * weights))) / weights if masked else choice["nonzero"]
        size += weights * (nonzero * choice["bits"] + entropy_bits(nonzero))
        macs += weights * pixels[name][0] * pixels[name][1]
    return size, macs


@pytest.mark.parametrize("kind", ["size", "macs"])
@pytest.mark.parametrize("supernet", ["mbv2", "resnet"])
@settings(max_examples=25)
@given(data=st.data())
def test_relaxed_cost_at_one_hot_z_is_the_exact_cost(supernet, kind, data):
    """For any configuration of the real supernet, the exact cost of the budget is the sum over the layer
    shapes of what the masks keep, and the relaxed cost at its one-hot z that sum at the nominal fractions
    (MACs: one number). Under a MAC budget bits and sparsity are not searched: 8 bits, dense."""
    search = searched_space(supernet, kind)
    model = search.model
    picks = {key: data.draw(st.integers(0, len(decision.options) - 1), label=key)
             for key, decision in search.decisions.items()}
    z = {key: F.one_hot(torch.tensor([index]), len(search.decisions[key].options)).float()
         for key, index in picks.items()}
    option = {key: search.decisions[key].options[index] for key, index in picks.items()}
    width_keys = model.width_keys()
    option = {**{f"{name}:{axis}": search.fixed[axis] for name in model.layers for axis in search.fixed}, **option}
    layers = {name: {"bits": option[f"{name}:bits"], "nonzero": option[f"{name}:nonzero"],
                     "width": option.get(f"{width_keys[name]}:width", 1.0)}
              for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    config = {"layers": layers, "skipped": [block for block in model.blocks if option[f"{block}:op"] == 0.0]}

    select_configuration(model, config)
    exact = search.budget.exact(model)
    relaxed = float(search.relaxed_cost(model, z))
    size, macs = costs_by_hand(model, config)
    nominal = costs_by_hand(model, config, masked=False)[0]
    assert exact == pytest.approx(size if kind == "size" else macs, rel=1e-9)
    assert relaxed == pytest.approx(nominal if kind == "size" else macs, rel=1e-5)
