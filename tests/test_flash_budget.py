"""Budgets in measured units: the budget forms, the Flash model and its fit, the search's Flash cost
(exact and relaxed, from the real weight codec) and the measured repair of a compiled candidate (real
TF conversion and Vela)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core.budgets import label, parse_budgets, searched_kind, text
from core.data import synthetic
from core.errors import UsageError
from core.flash_model import FEATURES, NOMINAL, FlashModel
from harness.cost_providers import providers
from search.flash_cost import FlashCost
from search.space import SearchableLayer, to_candidate
from search.strategy.budget import Budget, BudgetWarning, select_configuration
from search.strategy.emit import emit_candidate
from search.strategy.measured import move_options, verify_measured
from search.strategy.udc import UDCSearch
from targets.vela_weights import encoded_bytes, flash_features

TINY = {"pretrain_epochs": 1.0, "pretrain_batch_size": 32, "warmup_steps": 16, "search_steps": 32, "batch_size": 16,
        "finetune_steps": 16, "finetune_batch_size": 32}


@pytest.mark.parametrize("given_text,expected", [
    ("38KiB", {"flash": 38912.0}), ("flash=32KiB", {"flash": 32768.0}), ("size_bound=24KB", {"size_bound": 24000.0}),
    ("macs=2000000", {"macs": 2e6}), ("flash=40KiB, npu_cycles=50000", {"flash": 40960.0, "npu_cycles": 50000.0}),
    ("SRAM=30KiB,macs=1e6", {"sram": 30720.0, "macs": 1e6}),
])
def test_budget_forms(given_text, expected):
    assert parse_budgets(given_text) == expected
    assert parse_budgets(text(expected)) == expected  # written back, read again


@pytest.mark.parametrize("given_text,message", [
    ("flush=3KB", "unknown kind 'flush'"), ("flash=3KB,flash=4KB", "names flash twice"),
    ("macs=-4", "is not a positive count"), ("npu_cycles=2k", "is not a positive count"),
    ("flash=0", "is not a positive size"), ("sram=lots", "is not a positive size"),
])
def test_bad_budgets_say_what_to_write(given_text, message):
    with pytest.raises(UsageError, match=message):
        parse_budgets(given_text)


def test_budget_names_and_the_searched_kind():
    assert label({"size_bound": 24000.0}) == "24kB"  # the paper's budgets keep their names
    assert label({"flash": 38912.0, "npu_cycles": 5e4}) == "flash38.912kB-50000cycles"
    assert searched_kind({"npu_cycles": 1.0, "macs": 2.0, "flash": 3.0}) == "flash"
    assert searched_kind({"npu_cycles": 1.0, "macs": 2.0}) == "macs"
    assert searched_kind({"sram": 1.0}) is None


def test_the_fit_recovers_a_linear_flash_and_reports_its_worst_error():
    rng = np.random.default_rng(0)
    truth = {"encoded": 0.97, "channels": 10.2, "pooled": 11.5, "fixed": 140.0}
    samples = []
    for _ in range(12):
        features = {"encoded": float(rng.integers(2000, 30000)), "channels": float(rng.integers(300, 1800)),
                    "pooled": float(rng.choice([48, 96, 144, 192]))}
        samples.append((features, sum(truth[k] * features.get(k, 1.0) for k in FEATURES)))
    model = FlashModel.fit(samples, key="k")
    assert model.coefficients == pytest.approx(truth, rel=1e-6) and model.worst_error < 1e-9
    assert FlashModel.from_meta(model.to_meta()) == model
    with pytest.raises(ValueError, match="at least 4 compiled networks"):
        FlashModel.fit(samples[:3])
    assert FlashModel.from_meta({"coefficients": {"encoded": 1.0}}) is None  # a malformed record is no model


def test_flash_features_of_a_tflite_are_those_of_its_candidate():
    """The search reads the features off a candidate's weights; the harness off its exported model: the same
    numbers, so the prediction a search acted on is the one stored beside Vela's figure."""
    from harness.export import to_int8_tflite

    search = _space("mbv2")
    model = search.model
    config = {"layers": {name: {"bits": (8, 4, 2)[i % 3], "nonzero": (1.0, 0.5, 0.2)[i % 3], "width": 1.0}
                         for i, (name, layer) in enumerate(model.layers.items()) if isinstance(layer, SearchableLayer)},
              "skipped": []}
    select_configuration(model, config)
    model.refresh_masks()
    candidate = to_candidate(model, "features", {})
    tflite = to_int8_tflite(candidate, np.random.default_rng(0).random((8, 28, 28, 1), np.float32))
    assert search.budget.flash_cost.candidate_features(candidate) == flash_features(tflite)


def _space(supernet: str) -> UDCSearch:
    """A search over the real supernet with a Flash budget costed by the nominal Flash model (no compile)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        search = UDCSearch(synthetic(n_train=16, n_test=16), budget_bytes=10 ** 7, settings={"supernet": supernet},
                           quiet=True)
    cost = FlashCost(search.model, FlashModel(dict(NOMINAL)), encoded_bytes)
    search.budget = Budget(search.model, flash_bytes=10 ** 7, flash_cost=cost)
    search._build_decisions(search.model)
    return search


@pytest.mark.parametrize("supernet", ["mbv2", "resnet"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_relaxed_flash_at_one_hot_z_is_the_exact_flash(supernet, data):
    """Any configuration: the relaxed cost at its one-hot z is the exact cost, and the exact cost is the sum over
    active layers of encoded bytes (the layer's measured rate at its options times its kept elements), 10 bytes
    per kept output channel and the pool's channels."""
    search = _space(supernet)
    model, cost = search.model, search.budget.flash_cost
    picks = {key: data.draw(st.integers(0, len(d.options) - 1), label=key) for key, d in search.decisions.items()}
    z = {key: F.one_hot(torch.tensor([i]), len(search.decisions[key].options)).float() for key, i in picks.items()}
    option = {key: search.decisions[key].options[i] for key, i in picks.items()}
    keys = model.width_keys()
    config = {"layers": {name: {"bits": option[f"{name}:bits"], "nonzero": option[f"{name}:nonzero"],
                                "width": option.get(f"{keys[name]}:width", 1.0)}
                         for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)},
              "skipped": [block for block in model.blocks if option[f"{block}:op"] == 0.0]}
    select_configuration(model, config)
    exact = search.budget.exact(model)
    assert float(search.relaxed_cost(model, z)) == pytest.approx(exact, rel=1e-5)
    kept, inactive, by_hand = model.kept_channels(), model.inactive_layers(), 0.0
    for name, layer in model.layers.items():
        if not isinstance(layer, SearchableLayer) or name in inactive:
            continue
        kept_in = kept[model.sources[name][0]]
        out = kept_in if layer.op == "dwconv" else layer.kept_out_channels()
        elements = out * (layer.theta[0].numel() if layer.op == "dwconv" else layer.theta[0].numel() * kept_in
                          // layer.in_channels)
        by_hand += cost.rates[name][(layer.bits, layer.nonzero)] * elements + 10 * out
        by_hand += 10 * out if name in cost.pooled else 0
    assert exact == pytest.approx(by_hand, rel=1e-9)


def test_rates_are_the_codec_bytes_of_the_layer_weights():
    """A layer's rate at (8 bits, dense) is Vela's codec on its int8 codes per element; sparser and fewer bits
    encode smaller."""
    search = _space("mbv2")
    layer = search.model.layers["b5_expand"]
    rates = search.budget.flash_cost.rates["b5_expand"]
    assert rates[(8, 1.0)] > rates[(4, 1.0)] > rates[(2, 1.0)] and rates[(4, 1.0)] > rates[(4, 0.2)]
    weight = torch.stack([layer.theta.detach()])[0]
    from search.flash_cost import int8_codes
    from search.space import quantize

    codes = int8_codes(quantize(weight, 8, layer.ranges["8"]))
    assert rates[(8, 1.0)] == encoded_bytes(codes, False) / weight.numel()


@pytest.fixture(scope="module")
def flash_search():
    """A UDC search of the tiny schedule under a Flash budget, its Flash model calibrated on real compiles."""
    given = providers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        return UDCSearch(synthetic(n_train=256, n_test=64), settings=TINY, quiet=True, budgets={"flash": 60000.0},
                         deployed_figures=given["deployed_figures"], weight_encoder=given["weight_encoder"]), given


def test_the_calibrated_flash_model_is_within_2_percent_of_vela_on_unseen_networks(flash_search):
    search, given = flash_search
    assert search.flash_model.samples == 8 and search.flash_model.worst_error < 0.02
    model, rng = search.model, np.random.default_rng(42)
    from search.decisions import DecisionSpace
    from search.strategy.budget import draw_configuration

    options = DecisionSpace.of(model, by_layer=True, op_options=(0.0, 1.0)).options
    for _ in range(3):  # not among the calibration draws (another seed)
        select_configuration(model, draw_configuration(model, model.width_keys(), options, rng))
        model.refresh_masks()
        candidate = to_candidate(model, "unseen", {})
        figures = given["deployed_figures"](candidate, search.dataset.x_train[:32])
        predicted = search.flash_model.predict(figures["features"])
        assert abs(predicted - figures["flash_bytes"]) <= 0.02 * figures["flash_bytes"]
        assert search.budget.flash_cost.candidate_bytes(candidate) == pytest.approx(predicted, rel=1e-9)


@pytest.mark.parametrize("kind", ["flash", "npu_cycles"])
def test_a_candidate_over_its_measured_budget_is_moved_until_it_fits(flash_search, kind):
    """The largest configuration, emitted and compiled, with a budget just under what it measures: the measured
    repair moves decisions, measuring after each, until the compiled candidate fits; every move is recorded
    with its measured figures, and the meta says both verdicts."""
    search, given = flash_search
    model = search.model
    select_configuration(model, {"layers": {name: {"bits": 8, "nonzero": 1.0, "width": 1.0}
                                            for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)},
                                 "skipped": []})
    model.refresh_masks()
    meta = {"strategy": "udc", "supernet": "mbv2", "budgets": {"flash": 60000.0}}
    candidate = emit_candidate(model, search.dataset, meta, search.budget)
    figures = given["deployed_figures"](candidate, search.dataset.x_train[:32])
    measured = figures["flash_bytes" if kind == "flash" else "npu_cycles"]
    limits = {"flash": measured - 3000.0} if kind == "flash" else {"flash": 10.0 ** 6, "npu_cycles": measured * 0.9}
    options, log_probability = move_options(model, None, ())
    with pytest.warns(BudgetWarning, match="moved"):
        candidate = verify_measured(candidate, model, search.dataset, search.budget, limits,
                                    given["deployed_figures"], options, log_probability)
    meta = candidate.spec["meta"]
    assert meta["constraint_met_measured"] and meta["measured_before_moves"][kind] == measured
    assert meta["measured"][kind] <= limits[kind] and meta["measured_moves"]
    after = given["deployed_figures"](candidate, search.dataset.x_train[:32])
    assert after["flash_bytes" if kind == "flash" else "npu_cycles"] == meta["measured"][kind]
    figures_along = [float(move.rsplit("-> ", 1)[1].rstrip(")")) for move in meta["measured_moves"]]
    assert figures_along[-1] == meta["measured"][kind] and all(f"{kind} " in move for move in meta["measured_moves"])


def test_a_measured_budget_without_the_harness_is_one_line():
    with pytest.raises(UsageError, match="run the search through the harness"):
        UDCSearch(synthetic(n_train=16, n_test=16), budgets="flash=40KiB", settings=TINY, quiet=True)
    with pytest.raises(UsageError, match="needs a Flash, size_bound or MAC budget"):
        UDCSearch(synthetic(n_train=16, n_test=16), budgets="npu_cycles=4000", settings=TINY, quiet=True)
