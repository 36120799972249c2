"""The budget verdicts of a search hold for what it deploys: masks keep the chosen share of the slice the
widths deploy, an emitted candidate's verdict is read off its own weights, the repair reaches every budget
the decisions can meet (the size bound is not monotone in the nonzero fraction at b <= 2), a single bit
option is searched at that bitwidth, and a MAC budget holds weights at 8 bits and dense."""

import copy
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import synthetic
from core.errors import UsageError
from search.decisions import DecisionSpace
from search.settings import UDC_QUICK
from search.space import (GlobalAveragePool, GraphNet, SearchableConv2d, SearchableDense, kept_count, make_supernet,
                          quantize, to_candidate)
from search.strategy.budget import (Budget, BudgetWarning, cheaper, extreme_configuration, select_configuration)
from search.strategy.emit import budget_meta, finish_candidate, searched_candidate
from search.strategy.pretrain import pretrain_state
from search.strategy.random_search import random_configuration
from search.strategy.udc import UDCSearch

TINY = {"pretrain_epochs": 2, "pretrain_batch_size": 32, "warmup_steps": 16, "search_steps": 32, "batch_size": 16,
        "finetune_steps": 32, "finetune_batch_size": 32}


def entropy_bits(s: float) -> float:
    """H2(s), written out."""
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=512, n_test=128)


def two_convs(**options) -> GraphNet:
    """conv a (1 -> 8, 3x3/2) -> conv b (8 -> 8, 1x1) -> pool -> dense fc (8 -> 10): b reads the channels a
    keeps, fc those b keeps."""
    torch.manual_seed(0)
    net = GraphNet((28, 28, 1), 10)
    net.append("a", SearchableConv2d(1, 8, 3, stride=2, activation="relu", **options), "input")
    net.append("b", SearchableConv2d(8, 8, 1, activation="relu", **options), "a")
    net.append("pool", GlobalAveragePool(), "b")
    net.append("fc", SearchableDense(8, 10, **{**options, "width_options": (1.0,)}), "pool")
    return net


# ---------------------------------------------------------------- masks on the kept slice


@pytest.mark.parametrize("scaled,factor", [("sliced away", 100.0), ("kept", 2.0)])
def test_a_mask_keeps_exactly_the_chosen_share_of_the_deployed_slice(scaled, factor):
    """Width 0.5 and nonzero 0.5 in every layer; the channels the widths slice away (output rows of a and b,
    input columns of b and fc) hold large weights, or the kept slice has grown. Either way each deployed
    tensor keeps exactly kept_count(N_kept, 0.5) nonzeros: the mask ranks the kept slice alone."""
    net = two_convs(nonzero_options=(1.0, 0.5), width_options=(1.0, 0.5))
    select_configuration(net, {"layers": {name: {"bits": None, "nonzero": 0.5, "width": 0.5 if name != "fc" else 1.0}
                                          for name in ("a", "b", "fc")}, "skipped": []})
    kept = {"a": (slice(0, 4), slice(0, 1)), "b": (slice(0, 4), slice(0, 4)), "fc": (slice(0, 10), slice(0, 4))}
    with torch.no_grad():
        for name, region in kept.items():
            theta = net.layers[name].theta
            inside = torch.zeros_like(theta, dtype=torch.bool)
            inside[region] = True
            theta.mul_(torch.where(inside == (scaled == "kept"), factor, 1.0))
    net.refresh_masks()
    candidate = to_candidate(net, "masks")
    for name in kept:
        weight = candidate.weights[f"{name}.weight"]
        assert np.count_nonzero(weight) == kept_count(weight.size, 0.5), name
        [entry] = [layer for layer in candidate.weight_layers() if layer["name"] == name]
        assert entry["nonzero"] == kept_count(weight.size, 0.5) / weight.size


# ---------------------------------------------------------------- verdicts from the deployed weights


def size_of_weights(candidate) -> float:
    """sum over the deployed weight tensors of N * (s*b + H2(s)), s their share of nonzeros and b the bits
    their layer records (enough for their distinct nonzero values: checked here)."""
    total = 0.0
    for layer in candidate.weight_layers():
        weight = candidate.weights[f"{layer['name']}.weight"]
        values = np.unique(weight[weight != 0])
        assert len(values) <= 2 ** layer["bits"]
        s = np.count_nonzero(weight) / weight.size
        total += weight.size * (s * layer["bits"] + entropy_bits(s))
    return total


def configured_mbv2():
    """Low bits, sparsity and widths below 1 mixed over the layers; blocks b3 skipped."""
    torch.manual_seed(0)
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, bit_options=(8, 4, 2),
                          nonzero_options=(1.0, 0.5, 0.2), width_options=(1.0, 0.5))
    config = {"layers": {}, "skipped": ["b3_add"]}
    for index, name in enumerate(n for n, layer in model.layers.items() if hasattr(layer, "theta")):
        width = 0.5 if name.startswith(("b1_", "stem", "head")) else 1.0
        config["layers"][name] = {"bits": (2, 4, 8)[index % 3], "nonzero": (1.0, 0.5, 0.2)[index % 3], "width": width}
    select_configuration(model, config)
    return model


def test_an_emitted_candidate_records_the_size_of_its_deployed_weights(dataset):
    """The search hands over the configuration's figures from before finetuning, with the budget set at
    exactly that size, so they say it is met. The finetuned candidate's verdict is recomputed from its
    weights: its 2-bit dense layers have quantized some weights to zero, which the bound counts as a
    mask, and it misses, loudly."""
    model = configured_mbv2()
    configured = Budget(model, 1.0, None).exact(model)
    budget = Budget(model, configured / 8, None)
    settings = {**UDC_QUICK, "finetune_steps": 12, "finetune_batch_size": 32, "compare_number_format": False}
    meta = {"strategy": "udc", **budget_meta(budget, configured, True)}
    searched = searched_candidate(model, settings, meta, budget)
    assert searched.spec["meta"]["size_bits"] == pytest.approx(size_of_weights(searched), rel=1e-12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetWarning)
        candidate = finish_candidate(model, dataset, settings, True, meta, budget)
    recorded = candidate.spec["meta"]
    deployed = size_of_weights(candidate)
    assert deployed > configured
    assert recorded["size_bits"] == pytest.approx(deployed, rel=1e-12) and recorded["constraint_met"] is False
    [missed] = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    assert missed == (f"udc: the deployed candidate costs {deployed / 8:.0f} bytes, over the budget of "
                      f"{configured / 8:.0f} bytes: constraint NOT met")


# ---------------------------------------------------------------- the repair where the size is not monotone


def stalled(budget_bytes: float) -> tuple[UDCSearch, GraphNet]:
    """The mbv2 space with pi sure of 2 bits, dense, width 0.25 and both blocks skipped: 799 bytes, while its
    smallest configuration (2 bits at s = 0.2) is 448. From s = 1 at 2 bits the next fraction down, 0.7,
    costs more (2.28 bits per weight), and 0.5 the same (2.0)."""
    search = UDCSearch(synthetic(n_train=16, n_test=16), budget_bytes=budget_bytes, settings=TINY, quiet=True)
    model = search.model
    search._build_decisions(model)
    with torch.no_grad():
        for key, decision in search.decisions.items():
            decision.logits.zero_()
            target = {"bits": 2, "nonzero": 1.0, "width": 0.25, "op": 0.0}[key.rsplit(":", 1)[1]]
            decision.logits[decision.options.index(target)] = 5.0
    select_configuration(model, search.argmax_configuration(model))
    assert round(search.budget.exact(model) / 8) == 799 and round(search.minimum / 8) == 448
    return search, model


def test_repair_reaches_a_budget_below_the_stalled_point():
    search, model = stalled(624)
    with pytest.warns(BudgetWarning) as caught:
        meta = search.enforce_budget(model)
    messages = " ".join(str(w.message) for w in caught)
    assert "repaired the configuration" in messages and "no configuration" not in messages
    assert meta["constraint_met"] is True and meta["size_bits"] <= 8 * 624 < meta["size_bits_gamma_pi"]
    assert meta["repair_moves"] and search.budget.exact(model) == meta["size_bits"]


def test_no_configuration_is_said_only_when_the_decisions_cannot_reach_the_budget():
    """Without the nonzero decisions the repair can only reach 2 bits, dense, at the smallest widths: 799
    bytes, over 624. That is what the warning says, with the smallest cost."""
    search, model = stalled(624)
    for key in [key for key in search.decisions if key.endswith(":nonzero")]:
        del search.decisions[key]
    with pytest.warns(BudgetWarning) as caught:
        meta = search.enforce_budget(model)
    messages = [str(w.message) for w in caught]
    assert any("no configuration of its decisions meets the budget (the smallest costs 799 bytes)" in m
               for m in messages)
    assert meta["constraint_met"] is False


def test_a_cheaper_move_exists_from_every_configuration_but_the_smallest():
    """Enumerated over a space small enough to list (bits 1 or 2, nonzero 1, 0.7 or 0.5, widths 1 or 0.5):
    ``cheaper`` offers a strictly cheaper move from every configuration costing more than the smallest,
    none from the smallest, and the smallest is the one ``extreme_configuration`` names."""
    net = two_convs(bit_options=(1, 2), nonzero_options=(1.0, 0.7, 0.5), width_options=(1.0, 0.5))
    budget = Budget(net, 10.0, None)
    space = DecisionSpace.of(net, single_options=False).options
    keys, width_keys = list(space), net.width_keys()
    costs = []
    for picks in itertools.product(*space.values()):
        option = dict(zip(keys, picks))
        config = {"layers": {name: {"bits": option[f"{name}:bits"], "nonzero": option[f"{name}:nonzero"],
                                    "width": option.get(f"{name}:width", 1.0)} for name in ("a", "b", "fc")},
                  "skipped": []}
        select_configuration(net, config)
        costs.append((budget.exact(net), config))
    smallest = min(cost for cost, _ in costs)
    select_configuration(net, extreme_configuration(net, budget, smallest=True))
    assert budget.exact(net) == smallest
    for cost, config in costs:
        select_configuration(net, config)
        moves = [moved for key in keys if (moved := cheaper(net, budget, config, key, space[key], width_keys))]
        assert bool(moves) == (cost > smallest), config
        for _, _, moved_config, after in moves:
            assert after < cost
            select_configuration(net, moved_config)
            assert budget.exact(net) == after
            select_configuration(net, config)


def test_random_draws_reach_a_budget_where_the_lowest_options_are_not_the_cheapest():
    """1 bit: dense costs 1 bit per weight, half dense 1.5. A draw moved down option by option would end at
    s = 0.5 over a budget the dense smallest configuration meets."""
    search = UDCSearch(synthetic(n_train=16, n_test=16), budget_bytes=420,
                       settings={**TINY, "bit_options": [1], "nonzero_options": [1.0, 0.5]}, quiet=True)
    assert round(search.minimum / 8) == 400
    for seed in range(4):
        random_configuration(search.model, search.budget, np.random.default_rng(seed))
        assert search.budget.exact(search.model) <= search.budget.limit


# ---------------------------------------------------------------- fixed options: one bit option, MAC budgets


def one_hot_z(search: UDCSearch, index_of) -> dict:
    return {key: F.one_hot(torch.tensor([index_of(key, d.options)]), len(d.options)).float()
            for key, d in search.decisions.items()}


def test_a_single_bit_option_is_searched_quantized_and_counted_at_that_bitwidth(dataset):
    search = UDCSearch(dataset, budget_bytes=30000, settings={**TINY, "bit_options": [8]}, quiet=True)
    model = search._folded_supernet(pretrained=False)
    search._build_decisions(model)
    for layer in model.searchable_layers():
        layer.init_option_ranges()
    assert all(layer.bits == 8 for layer in model.searchable_layers())
    assert not any(key.endswith(":bits") for key in search.decisions)
    full = one_hot_z(search, lambda key, options: options.index(1.0))  # full width, dense, every block kept
    assert float(search.relaxed_cost(model, full)) == pytest.approx(8 * 81584, rel=1e-6)  # not 32 bits a weight
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer in reference.searchable_layers():
            layer.theta.copy_(quantize(layer.theta, 8, layer.ranges["8"]))
            layer.bits = None
    images = torch.from_numpy(dataset.x_test[:4])
    search.relax(model, full)
    search.relax(reference, full)
    with torch.no_grad():
        assert torch.equal(model(images), reference(images))  # the relaxed forward quantizes to 8 bits
    assert all(choice["bits"] == 8 for choice in search.argmax_configuration(model)["layers"].values())


@pytest.fixture(scope="module")
def pretrained(dataset):
    return pretrain_state(dataset, {**UDC_QUICK, **TINY, "pretrain_epochs": 0.1})


def test_a_mac_budget_holds_weights_at_8_bits_and_dense(dataset, pretrained):
    settings = {**TINY, "pretrain_epochs": 0.1, "warmup_steps": 2, "search_steps": 4}
    search = UDCSearch(dataset, macs=400_000, settings=settings, quiet=True, pretrained=pretrained)
    # the supernet the search trains holds its weights at 8 bits (quantized), dense, from the start
    assert all((layer.bits, layer.nonzero) == (8, 1.0) for layer in search._folded_supernet(True).searchable_layers())
    model = search.search()
    assert {key.rsplit(":", 1)[1] for key in search.decisions} == {"width", "op"}
    assert all((layer.bits, layer.nonzero) == (8, 1.0) for layer in model.searchable_layers())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        meta = search.enforce_budget(model)
    assert meta["constraint_met"] and meta["macs"] <= 400_000
    for seed in range(3):  # random draws grow bits and sparsity, which cost no MACs, to 8 bits and dense
        config = random_configuration(search.model, search.budget, np.random.default_rng(seed))
        assert all((choice["bits"], choice["nonzero"]) == (8, 1.0) for choice in config["layers"].values())


def test_mac_compression_asks_for_bits_and_sparsity_under_a_mac_budget(dataset):
    search = UDCSearch(dataset, macs=400_000, settings={**TINY, "mac_compression": True}, quiet=True)
    search._build_decisions(search.model)
    assert search.fixed == {} and {key.rsplit(":", 1)[1] for key in search.decisions} == {"bits", "nonzero", "width",
                                                                                           "op"}
    with pytest.raises(UsageError, match="a MAC budget keeps weights at 8 bits and dense.*mac_compression = true"):
        UDCSearch(dataset, macs=400_000, settings={**TINY, "bit_options": [4, 2]})
    UDCSearch(dataset, macs=400_000, settings={**TINY, "bit_options": [4, 2], "mac_compression": True})
    with pytest.raises(UsageError, match="mac_compression = 1 has the wrong type"):
        UDCSearch(dataset, macs=400_000, settings={**TINY, "mac_compression": 1})
