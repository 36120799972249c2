import warnings

import pytest
import torch

from harness.data import synthetic
from harness.errors import UsageError
from search.space import SearchableConv2d, SearchableDense, make_supernet
from search.strategy import BudgetWarning, UDCSearch, search_and_finetune
from search.strategy.random_search import RandomSearch

TINY = {"pretrain_epochs": 2, "pretrain_batch_size": 32, "warmup_steps": 16, "search_steps": 160, "batch_size": 16,
        "finetune_steps": 32, "finetune_batch_size": 32}
BUDGET_BYTES = 30000  # of 81584 for the full space at 8 bits


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=512, n_test=256)


@pytest.fixture(scope="module")
def udc_candidate(dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)  # a missed budget must not pass silently
        return search_and_finetune(dataset, "udc", budget_bytes=BUDGET_BYTES, settings=TINY, quiet=True)


def test_search_meets_its_budget(udc_candidate):
    meta = udc_candidate.spec["meta"]
    assert meta["strategy"] == "udc" and meta["constraint_met"] is True
    assert meta["size_bits_argmax"] <= 8 * BUDGET_BYTES
    assert meta["budget_bytes"] == BUDGET_BYTES
    assert meta["search"]["projection"] and meta["search"]["rejection"]
    assert set(meta["decisions"]["stem"]) == {"bits", "nonzero", "width", "op"}
    assert 0.0 <= meta["accuracy_float"] <= 1.0


def test_budget_below_the_smallest_configuration_names_the_minimum(dataset):
    with pytest.raises(UsageError, match=r"smallest configuration of the mbv2 space, 448 bytes"):
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
        search_and_finetune(dataset, "evolution", budget_bytes=1e4)


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
        layer.refresh_mask()
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
    search = UDCSearch(dataset, macs=400_000, settings={**TINY, "search_steps": 32}, quiet=True)
    model = search.search()
    exact = search.budget.exact(model)
    assert search.budget.kind == "macs" and exact > 0
    assert search.minimum < search.maximum


def test_random_search_returns_a_candidate_under_budget(dataset):
    settings = {**TINY, "search_steps": 64, "random_trials": 2, "validation_images": 128}
    candidate = RandomSearch(dataset, budget_bytes=BUDGET_BYTES, settings=settings, quiet=True).run()
    meta = candidate.spec["meta"]
    assert meta["strategy"] == "random" and meta["constraint_met"]
    assert meta["size_bits_argmax"] <= 8 * BUDGET_BYTES
    assert meta["random"]["trials"] == 2
