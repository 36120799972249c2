import copy
import math
import warnings

import numpy as np
import pytest
import torch

from core.candidate import Candidate, layer_shapes
from core.data import synthetic
from core.errors import UsageError
from core.search_result import SearchResult
from search.space import (GraphNet, SearchableConv2d, SearchableDense, SearchableLayer, magnitude_mask, make_supernet,
                          to_candidate)
from search.strategy import search_and_finetune
from search.strategy.budget import Budget, BudgetWarning
from search.strategy.emit import searched_candidate
from search.strategy.random_search import RandomSearch, best_after_trials
from search.strategy.udc import UDCSearch

TINY = {"pretrain_epochs": 2, "pretrain_batch_size": 32, "warmup_steps": 16, "search_steps": 160, "batch_size": 16,
        "finetune_steps": 32, "finetune_batch_size": 32}
BUDGET_BYTES = 30000  # of 81584 for the full space at 8 bits


def entropy_bits(s: float) -> float:
    """H2(s), written out here so the size model is checked against its definition."""
    return 0.0 if s in (0.0, 1.0) else -(s * math.log2(s) + (1 - s) * math.log2(1 - s))


def deployed(model: GraphNet) -> Candidate:
    """The selected configuration as the candidate it deploys to (channels sliced away physically)."""
    model = copy.deepcopy(model)
    model.refresh_masks()
    return to_candidate(model, "deployed")


def size_bits_by_hand(candidate: Candidate, nonzero: dict[str, float] | None = None) -> float:
    """sum over the deployed weight tensors of N * (s*b + H2(s)): s the share of nonzeros the tensor holds,
    or with ``nonzero`` (the selected fractions) the share its mask keeps, round(s*N) of N."""
    total = 0.0
    for entry in candidate.weight_layers():
        weight = candidate.weights[f"{entry['name']}.weight"]
        if nonzero is None:
            s = np.count_nonzero(weight) / weight.size
        else:
            s = min(weight.size, max(1, round(nonzero[entry["name"]] * weight.size))) / weight.size
        total += weight.size * (s * entry["bits"] + entropy_bits(s))
    return total


def macs_by_hand(candidate: Candidate) -> int:
    """Every deployed weight multiplies once per output pixel: conv k*k*cin*cout, depthwise k*k*c and
    dense cin*cout weights, times H_out*W_out (1 for a vector)."""
    shapes = layer_shapes(candidate.spec)
    total = 0
    for entry in candidate.weight_layers():
        out = shapes[entry["name"]]
        total += candidate.weights[f"{entry['name']}.weight"].size * (out[0] * out[1] if len(out) == 3 else 1)
    return total


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=512, n_test=256)


@pytest.fixture(scope="module")
def udc_candidate(dataset):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetWarning)
        candidate = search_and_finetune(dataset, "udc", {"size_bound": BUDGET_BYTES}, settings=TINY, quiet=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    # The search aims at e*, so gamma(pi) can land a little over it; that must be said, and repaired.
    assert candidate.spec["meta"]["constraint_met_argmax"] == (not messages)
    assert not messages or ("constraint NOT met" in messages[0] and "repaired" in messages[1])
    return candidate


def test_search_meets_its_budget(udc_candidate):
    meta = udc_candidate.spec["meta"]
    assert meta["strategy"] == "udc" and meta["constraint_met"] is True
    assert meta["size_bits"] == pytest.approx(size_bits_by_hand(udc_candidate), rel=1e-9)  # its deployed weights
    assert meta["size_bits"] <= 8 * BUDGET_BYTES
    assert meta["budget_bytes"] == BUDGET_BYTES
    assert meta["search"]["projection"] and meta["search"]["rejection"]
    assert set(meta["decisions"]["stem"]) == {"bits", "nonzero", "width", "op"}
    # every figure the search records is a field of the typed result; the rest says what made the candidate
    figures = SearchResult.from_meta(meta)
    assert set(figures.extra) == {"strategy", "supernet", "dataset", "search", "accuracy_float"}
    assert figures.pi and figures.search_history and not set(SearchResult.row_keys()) & {"pi", "search_history"}
    assert figures.to_meta() == {key: value for key, value in meta.items() if key not in figures.extra and value is not None}
    assert 0.0 <= meta["accuracy_float"] <= 1.0


def test_budget_below_the_smallest_configuration_names_the_minimum(dataset):
    """The smallest mbv2 configuration: width 0.25, blocks b3 and b5 skipped, every weight at the cheapest
    of bits {8, 6, 4, 3, 2} x nonzero {1, 0.7, 0.5, 0.35, 0.2}, which is 2 bits at 0.2."""
    elements = (3 * 3 * 1 * 4  # stem: 16 -> 4 channels
                + 4 * 16 + 3 * 3 * 16 + 16 * 6  # b1: expand 64 -> 16, dw, project 24 -> 6
                + 6 * 24 + 3 * 3 * 24 + 24 * 8  # b2: expand 96 -> 24, dw, project 32 -> 8
                + 8 * 32 + 3 * 3 * 32 + 32 * 16  # b4: expand 128 -> 32, dw, project 64 -> 16
                + 16 * 48 + 48 * 10)  # head 192 -> 48, fc to 10 classes
    cheapest = min(s * b + entropy_bits(s) for b in (8, 6, 4, 3, 2) for s in (1.0, 0.7, 0.5, 0.35, 0.2))
    assert cheapest == 0.2 * 2 + entropy_bits(0.2)
    minimum = f"{elements * cheapest / 8:.0f} bytes"
    with pytest.raises(UsageError, match=rf"smallest configuration of the mbv2 space, {minimum}"):
        UDCSearch(dataset, budget_bytes=100, settings=TINY)


def test_budget_above_the_largest_configuration_warns(dataset):
    with pytest.warns(BudgetWarning, match="unconstrained"):
        UDCSearch(dataset, budget_bytes=10 ** 6, settings=TINY)


@pytest.mark.parametrize("arguments,message", [
    ({"budget_bytes": None}, "exactly one budget"), ({"budget_bytes": 1e4, "macs": 10 ** 6}, "exactly one budget"),
    ({"budget_bytes": 1e4, "settings": {"lamda": 1}}, "unknown search setting"),
])
def test_bad_arguments_are_usage_errors(dataset, arguments, message):
    with pytest.raises(UsageError, match=message):
        UDCSearch(dataset, **arguments)


def test_unknown_strategy_is_a_usage_error(dataset):
    with pytest.raises(UsageError, match="unknown search strategy"):
        search_and_finetune(dataset, "evolution", {"size_bound": 1e4})


def one_hot(index: int, options: int, samples: int = 1) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.full((samples,), index), options).float()


@pytest.mark.parametrize("layer_type", ["conv", "dense"])
def test_relaxed_layer_with_one_hot_choices_equals_the_fixed_layer(layer_type):
    torch.manual_seed(0)
    options = {"bit_options": (8, 4, 2), "nonzero_options": (1.0, 0.5, 0.2), "width_options": (1.0, 0.5)}
    if layer_type == "conv":
        layer, x = SearchableConv2d(4, 8, 3, stride=2, activation="relu", **options), torch.randn(6, 4, 9, 9)
    else:
        layer, x = SearchableDense(12, 8, activation="relu", **options), torch.randn(6, 12)
    layer.init_option_ranges()
    picks = [(1, 2, 1), (0, 0, 0), (2, 1, 1)]  # (bits, nonzero, width) option indices, one per sample group
    expected = []
    for group, (b, s, w) in enumerate(picks):
        layer.select(bits=options["bit_options"][b], nonzero=options["nonzero_options"][s],
                     width=options["width_options"][w])
        if layer.nonzero < 1.0:
            # The search's option masks rank all of theta (its width is relaxed too, so no kept slice is
            # known); the fixed layer gets the same. Deployed masks rank the kept slice (test_sound_verdicts).
            layer.mask = magnitude_mask(layer.theta, layer.nonzero).to(layer.theta.dtype)
        with torch.no_grad():
            expected.append(layer(x[2 * group:2 * group + 2]))
        layer.relax(bits=one_hot(b, 3), nonzero=one_hot(s, 3), width=one_hot(w, 2))
        with torch.no_grad():
            single = layer(x[2 * group:2 * group + 2])
        layer.relax()
        torch.testing.assert_close(single, expected[-1])
    # All three samples in one forward: each group of two images gets its own configuration.
    stack = lambda axis, k: torch.cat([one_hot(p[axis], k) for p in picks])  # noqa: E731
    layer.relax(bits=stack(0, 3), nonzero=stack(1, 3), width=stack(2, 2))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.cat(expected))


def test_identity_gate_searches_depth():
    torch.manual_seed(0)
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, bit_options=(8,))
    assert set(model.blocks) == {"b3_add", "b5_add"}
    images = torch.rand(4, 28, 28, 1)
    with torch.no_grad():
        full = model(images)
        model.skip_block("b3_add")
        skipped = model(images)
        model.skip_block("b3_add", False)
        model.relax(gates={"b3_add": torch.tensor([1.0, 0.0])})  # group 1 keeps the block, group 2 skips it
        mixed = model(images)
    torch.testing.assert_close(mixed[:2], full[:2])
    torch.testing.assert_close(mixed[2:], skipped[2:])


def test_width_groups_follow_residual_chains():
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, width_options=(1.0, 0.5))
    keys = model.width_keys()
    assert keys["b1_dw"] == keys["b1_expand"] == "b1_expand"
    assert keys["b2_project"] == keys["b3_project"] == keys["b3_add"]
    assert keys["fc"] is None


def test_vanilla_dnas_disables_projection_and_rejection(dataset, monkeypatch):
    search = UDCSearch(dataset, budget_bytes=BUDGET_BYTES, settings={**TINY, "search_steps": 8, "warmup_steps": 2},
                       vanilla=True, quiet=True)
    assert search.strategy == "dnas"
    assert (search.settings["projection"], search.settings["rejection"]) == (False, False)
    assert search.settings["size_estimate"] == "expected"

    def forbidden(*args, **kwargs):
        raise AssertionError("vanilla DNAS must not project pi")

    monkeypatch.setattr(UDCSearch, "project", forbidden)
    seen = []
    original = UDCSearch.relaxed_cost
    monkeypatch.setattr(UDCSearch, "relaxed_cost", lambda self, model, z: seen.append(z) or original(self, model, z))
    search.search()
    assert seen and all(z[key].shape[0] == 1 for z in seen for key in z)  # expected options, not samples


def test_mac_budget_mode(dataset):
    """Under a MAC budget the emitted configuration's MACs, counted on the deployed network, are within
    the budget and are what the result records."""
    budget = 400_000
    search = UDCSearch(dataset, macs=budget, settings={**TINY, "search_steps": 32}, quiet=True)
    assert search.budget.kind == "macs" and search.minimum < budget < search.maximum  # the budget constrains
    model = search.search()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        meta = search.enforce_budget(model)
    macs = macs_by_hand(deployed(model))
    assert 0 < macs <= budget
    assert meta["constraint_met"] is True and meta["macs"] == macs and meta["budget_macs"] == budget
    assert "size_bits" not in meta and meta["macs_gamma_pi"] >= macs


def test_random_search_returns_a_candidate_under_budget(dataset):
    """The configuration drawn fits the budget (no warning about it). The candidate's verdict is read off its
    finetuned weights: a draw grown to just under the budget can land a little over it there, as 2-bit dense
    layers quantize some weights to zero (the bound counts them as a mask); that is said, and recorded."""
    settings = {**TINY, "search_steps": 64, "random_trials": 2, "validation_images": 128}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetWarning)
        candidate = RandomSearch(dataset, budget_bytes=BUDGET_BYTES, settings=settings, quiet=True).run()
    messages = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    meta = candidate.spec["meta"]
    assert meta["strategy"] == "random" and meta["random"]["trials"] == 2
    assert not any("searched configuration" in message for message in messages)
    assert meta["size_bits"] == pytest.approx(size_bits_by_hand(candidate), rel=1e-9)
    assert meta["constraint_met"] == (meta["size_bits"] <= 8 * BUDGET_BYTES) == (not messages)
    assert meta["size_bits"] <= 8 * BUDGET_BYTES * 1.01


class RecordingTrials(RandomSearch):
    """Records every trial's training: its steps, its training images and the weight norms it returned."""

    def train_trial(self, model, train, steps, trial):
        norms = super().train_trial(model, train, steps, trial)
        self.trials.append({"steps": steps, "images": len(train.x_train), "norms": norms})
        return norms


def test_random_search_with_the_papers_protocol_finetunes_every_trial_fully(dataset):
    """Sec. 6.1: every random network gets the finetuning UDC's result gets, the best on held-out images is the
    result as trained (not finetuned again), and Fig. 5b's best accuracy after n trials is recorded."""
    settings = {**TINY, "random_trials": 3, "validation_images": 128, "random_protocol": "paper",
                "compare_number_format": False}
    search = RecordingTrials(dataset, budget_bytes=BUDGET_BYTES, settings=settings, quiet=True)
    search.trials, search.pretrained = [], search.model.state_dict()  # the supernet at its initialisation will do
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        candidate = search.run()
    meta = candidate.spec["meta"]
    random = meta["random"]
    assert [trial["steps"] for trial in search.trials] == [TINY["finetune_steps"]] * 3
    assert {trial["images"] for trial in search.trials} == {512 - 128}  # the held-out images are not trained on
    assert random["protocol"] == "paper" and random["steps_per_trial"] == TINY["finetune_steps"]
    assert random["udc_cost_trials"] == 3
    accuracies, best = random["trial_accuracies"], random["best_after_trials"]
    assert len(accuracies) == len(best) == 3
    assert random["validation_accuracy"] == max(accuracies) == accuracies[random["best_trial"]]
    assert all(later >= earlier for earlier, later in zip(best, best[1:]))
    assert best[-1] == pytest.approx(max(accuracies))
    # the emitted candidate is the best trial's network: its finetuning is the trial's, not a second one
    winner = search.trials[random["best_trial"]]["norms"]
    assert meta["weight_norm"]["trajectory_qhat"] == winner["trajectory"]
    assert meta["weight_norm"]["before"] == winner["before"]


def test_best_after_trials_averages_the_running_best_over_orders():
    accuracies = [0.2, 0.7, 0.4, 0.1]
    best = best_after_trials(accuracies, seed=0)
    assert len(best) == 4 and all(later >= earlier for earlier, later in zip(best, best[1:]))
    assert best[0] == pytest.approx(np.mean(accuracies), abs=0.05)  # a random first trial, 100 times
    assert best[-1] == pytest.approx(0.7)
    assert best == best_after_trials(accuracies, seed=0)  # seeded


@pytest.mark.parametrize("settings,message", [
    ({"tau": [0.1, 0.66]}, "tau must anneal downwards"),
    ({"tau": [0.66]}, r"tau is a \[start, end\] schedule"),
    ({"xi": [0.1, 2.0]}, r"xi is a \[start, end\] schedule"),
    ({"vartheta": [0.0, 1.0]}, "vartheta must stay below 1"),
    ({"stage_fractions": [0.5, 0.5, 0.5]}, "stage_fractions are three non-negative fractions summing to 1"),
    ({"samples": 0}, "samples must be >= 1"),
    ({"lambda_sweep": [1.0, -2.0]}, "lambda_sweep value must be positive"),
    ({"samples": "2"}, "samples = '2' has the wrong type"),
    ({"projection": 1}, "projection = 1 has the wrong type"),
    ({"random_protocol": "full"}, "random_protocol must be one of shared, paper, got 'full'"),
    ({"warmup_steps": 1.5}, "warmup_steps = 1.5 has the wrong type"),
])
def test_inconsistent_or_mistyped_settings_are_usage_errors(dataset, settings, message):
    with pytest.raises(UsageError, match=message):
        UDCSearch(dataset, budget_bytes=BUDGET_BYTES, settings={**TINY, **settings})


def _barely_searched(dataset, **settings):
    """A search too short to move pi: its argmax is the largest configuration, far over the budget."""
    search = UDCSearch(dataset, budget_bytes=BUDGET_BYTES, quiet=True,
                       settings={**TINY, "warmup_steps": 0, "search_steps": 2, "pi_lr": 1e-6, **settings})
    return search, search.search()


def test_an_over_budget_argmax_is_repaired_loudly(dataset):
    search, model = _barely_searched(dataset)
    assert search.budget.exact(model) > search.budget.limit
    with torch.no_grad():
        for decision in search.decisions.values():
            decision.logits.zero_()
        search.decisions["fc:bits"].logits[0] = 10.0  # fc is sure of its 8 bits: cheaper moves lose nothing
    with pytest.warns(BudgetWarning) as caught:
        meta = search.enforce_budget(model)
    messages = " ".join(str(w.message) for w in caught)
    assert "constraint NOT met" in messages and "repaired the configuration" in messages
    assert meta["constraint_met_argmax"] is False and meta["constraint_met"] is True
    assert meta["size_bits"] <= search.budget.limit < meta["size_bits_gamma_pi"]
    assert meta["repair_moves"] and not any(move.startswith("fc:bits") for move in meta["repair_moves"])
    nonzero = {name: layer.nonzero for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    assert meta["size_bits"] == pytest.approx(size_bits_by_hand(deployed(model), nonzero), rel=1e-9)


def test_without_repair_a_missed_budget_is_recorded_not_hidden(dataset):
    search, model = _barely_searched(dataset, repair=False)
    with pytest.warns(BudgetWarning, match="constraint NOT met"):
        meta = search.enforce_budget(model)
    assert meta["constraint_met"] is False and meta["constraint_met_argmax"] is False
    assert meta["size_bits"] > 8 * BUDGET_BYTES and meta["repair_moves"] == []


def test_lambda_sweep_searches_once_per_lambda_and_keeps_one(dataset):
    search = UDCSearch(dataset, budget_bytes=BUDGET_BYTES, quiet=True,
                       settings={**TINY, "search_steps": 32, "lambda_sweep": [0.5, 50.0]})
    model = search.search()
    assert [t["lambda"] for t in search.lambda_sweep] == [0.5, 50.0]
    assert sum(t["chosen"] for t in search.lambda_sweep) == 1
    chosen = next(t for t in search.lambda_sweep if t["chosen"])
    assert chosen["cost"] == search.budget.exact(model)
    if any(t["met"] for t in search.lambda_sweep):
        assert chosen["met"]


def test_resnet_identity_blocks_skip_exactly():
    from search.space import build_torch, to_candidate

    model = make_supernet("resnet", (28, 28, 1), 10, batchnorm=False, bit_options=(8,))
    assert set(model.blocks) == {"b1_add", "b3_add", "b5_add"}  # stride-1 blocks with an identity shortcut
    model.select(bits=8)
    model.skip_block("b3_add")
    candidate = to_candidate(model, "resnet-skip")
    names = [layer["name"] for layer in candidate.spec["layers"]]
    assert "b3_conv1" not in names and "b3_add" not in names and "b4_conv1" in names
    images = torch.rand(2, 28, 28, 1)
    with torch.no_grad():
        torch.testing.assert_close(build_torch(candidate)(images), model.eval()(images), rtol=1e-4, atol=1e-4)


def test_resnet_search_meets_its_budget(dataset):
    search = UDCSearch(dataset, budget_bytes=40000, quiet=True, settings={**TINY, "supernet": "resnet",
                                                                          "search_steps": 32})
    assert {key for key in search.model.blocks} == {"b1_add", "b3_add", "b5_add"}
    model = search.search()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        meta = search.enforce_budget(model)
    assert meta["constraint_met"] and {f"{b}:op" for b in model.blocks} <= set(search.decisions)


def test_random_configurations_land_just_under_the_budget(dataset):
    import numpy as np

    from search.strategy.random_search import random_configuration

    from tests.test_search_properties import costs_by_hand

    search = UDCSearch(dataset, budget_bytes=12000, settings=TINY)
    rng = np.random.default_rng(0)
    costs, configurations = [], []
    for _ in range(20):
        configurations.append(random_configuration(search.model, search.budget, rng))
        costs.append(costs_by_hand(search.model, configurations[-1])[0])
    assert max(costs) <= 8 * 12000
    assert np.median(costs) > 0.8 * 8 * 12000  # near the budget, not at the small end
    assert len({str(c) for c in configurations}) == 20


def test_searched_candidate_is_none_only_when_a_layer_deploys_no_weight():
    """The searched (pre-finetuning) candidate is left out exactly when a layer's range is so wide that every
    weight rounds to zero; otherwise it is made."""
    torch.manual_seed(0)
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, bit_options=(2,))
    model.select(bits=2)
    model.init_ranges()
    settings, meta = {"supernet": "mbv2"}, {"strategy": "udc", "budget_bytes": BUDGET_BYTES}
    budget = Budget(model, BUDGET_BYTES, None)
    searched = searched_candidate(model, settings, meta, budget)
    assert searched is not None and searched.spec["meta"]["stage"] == "searched"
    assert searched.name == f"udc-mbv2-{BUDGET_BYTES / 1000:g}kB-searched"
    with torch.no_grad():  # 2 bits: levels -r, 0, r; every |theta| < r / 2 rounds to 0
        model.layers["b2_dw"].ranges["2"].fill_(4 * float(model.layers["b2_dw"].theta.abs().max()))
    assert searched_candidate(model, settings, meta, budget) is None
