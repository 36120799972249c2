"""The seed peers' distinctive mechanisms: Zur et al.'s score-function gradient and BOPs, UNAS's hinge
on a measured latency table, NeuralScale's power-law fit, tau update, iterative ranking and training
from scratch."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import synthetic
from core.errors import UsageError
from harness.cli import main
from results.store import Store
from search import cost
from search.settings import NEURALSCALE_DEFAULTS, UDC_QUICK, ZUR_DEFAULTS, checked_peer_settings, merged_settings
from search.space import SearchableLayer, make_supernet
from search.strategy.budget import select_configuration
from search.strategy.neuralscale import NeuralScaleSearch, _descent, fit_power_laws, scale_to_budget
from search.strategy.unas import UNASSearch, hinge_penalty
from search.strategy.zur import ZurSearch, binomial_score, multinomial_score, score_function_gradient
from tests.test_run import TINY_SEARCH, _config


def test_score_function_gradient_matches_the_exact_expectation():
    """Eq. 3 on a space small enough to enumerate: two layers choosing one of 3 operations (multinomial,
    C = 1) and one layer keeping 1 + Binomial(3, sigmoid(alpha)) filters."""
    generator = torch.Generator().manual_seed(0)
    op_alpha = torch.randn(2, 3, generator=generator)
    filter_alpha = torch.tensor(0.3)
    table = torch.rand(3, 3, 4, generator=generator) * 5  # L(a) for (op of layer 1, op of layer 2, kept - 1)

    # the exact gradient of J = sum_a p(a | alpha) L(a), by enumeration and autograd
    alphas = (op_alpha.clone().requires_grad_(), filter_alpha.clone().requires_grad_())
    probs, p_filter = torch.softmax(alphas[0], -1), torch.sigmoid(alphas[1])
    expected = sum(probs[0, i] * probs[1, j] * torch.distributions.Binomial(3, p_filter).log_prob(torch.tensor(k)).exp()
                   * table[i, j, k] for i, j, k in itertools.product(range(3), range(3), range(4)))
    exact = torch.autograd.grad(expected, alphas)

    # the estimator over many sampled configurations
    samples = 400_000
    ops = torch.multinomial(probs.detach(), samples, replacement=True, generator=generator).T  # [S, 2]
    kept = torch.distributions.Binomial(3, p_filter.detach()).sample((samples,))
    losses = table[ops[:, 0], ops[:, 1], kept.long()]
    counts = torch.nn.functional.one_hot(ops, 3).float()
    op_gradient = score_function_gradient(losses, multinomial_score(counts, 1, probs.detach()))
    filter_gradient = score_function_gradient(losses, binomial_score(kept, 3, p_filter.detach()))
    torch.testing.assert_close(op_gradient, exact[0], atol=0.03, rtol=0.03)
    torch.testing.assert_close(filter_gradient, exact[1], atol=0.03, rtol=0.03)


# 4 search steps of |S| = 2 configurations, each on a group of 8 images; two bitwidths keep the ranges' fit short
ZUR_TINY = {"warmup_steps": 0, "search_steps": 8, "batch_size": 8, "zur_configurations": 2, "bit_options": [8, 4]}
ZUR_BUDGET_BYTES = 30000


@pytest.fixture(scope="module")
def zur_data():
    """A small dataset and, as the "pretrained" supernet, the folded supernet at its initialisation (these
    tests follow the weights, not their accuracy)."""
    dataset = synthetic(n_train=128, n_test=16)
    return dataset, ZurSearch(dataset, budget_bytes=ZUR_BUDGET_BYTES, quiet=True, settings=ZUR_TINY).model.state_dict()


def _zur(search_class, zur_data, **settings):
    dataset, pretrained = zur_data
    return search_class(dataset, budget_bytes=ZUR_BUDGET_BYTES, quiet=True, pretrained=pretrained,
                        settings={**ZUR_TINY, **settings})


def _weights_are(model, state) -> bool:
    """theta and bias of every layer equal those of ``state`` (each bitwidth's range is refitted, not reloaded)."""
    weights = {k: v for k, v in model.state_dict().items() if k.endswith((".theta", ".bias"))}
    return bool(weights) and all(torch.equal(value, state[key]) for key, value in weights.items())


class RecordingResets(ZurSearch):
    """Records, at every weight reset, whether the weights had moved off the pretrained ones and whether the
    reset put them back."""

    def reset_weights(self, model, step):
        moved = not _weights_are(model, self.pretrained)
        super().reset_weights(model, step)
        self.resets.append((step, moved, _weights_are(model, self.pretrained)))


def test_zur_weight_reset_returns_to_the_pretrained_weights_every_interval(zur_data):
    """Alg. C.3: with weight_reset the weights go back to the pretrained supernet's every zur_reset_interval
    steps (the start of each iteration but the first), having trained away from them in between."""
    search = _zur(RecordingResets, zur_data, weight_reset=True, zur_reset_interval=1)
    search.resets = []
    model = search.search()
    assert search.resets == [(1, True, True), (2, True, True), (3, True, True)]
    assert _weights_are(model, search.pretrained)  # and once more after the search, for the finetuning
    search = _zur(RecordingResets, zur_data, weight_reset=True, zur_reset_interval=2)
    search.resets = []
    search.search()
    assert search.resets == [(2, True, True)]
    search = _zur(RecordingResets, zur_data, weight_reset=False, zur_reset_interval=1)
    search.resets = []
    search.search()
    assert search.resets == []  # without weight_reset the weights train on throughout


class RecordingConfigurationLosses(ZurSearch):
    """Records, for every per-configuration finetune, whether the shared weights came out as they went in,
    and the configuration's loss on the shared weights beside the one after its finetune."""

    def configuration_loss(self, model, config, images, labels, batches):
        select_configuration(model, config)
        shared = [parameter.detach().clone() for parameter in model.parameters()]
        with torch.no_grad():
            on_shared = F.cross_entropy(model(images), labels).item()
        loss = super().configuration_loss(model, config, images, labels, batches)
        unchanged = all(torch.equal(a, b) for a, b in zip(shared, model.parameters()))
        self.calls.append((unchanged, on_shared, loss))
        return loss


def test_zur_configuration_finetune_works_on_a_copy_of_the_shared_weights(zur_data):
    """The "Basic search method": each sampled configuration is finetuned from a copy of the current weights
    before its loss is taken; the shared weights are left as they were."""
    search = _zur(RecordingConfigurationLosses, zur_data, zur_configuration_steps=2)
    search.calls = []
    search.search()
    assert len(search.calls) == 4 * 2  # every configuration of every step
    assert all(unchanged for unchanged, _, _ in search.calls)
    assert all(loss != on_shared for _, on_shared, loss in search.calls)  # the finetuned copy is what is scored
    search = _zur(RecordingConfigurationLosses, zur_data)
    search.calls = []
    search.search()
    assert search.calls == []  # zur_configuration_steps = 0: the shared weights' losses, as before


@pytest.mark.parametrize("key", ["zur_reset_interval", "zur_configuration_steps"])
def test_zur_step_counts_are_not_negative(key):
    with pytest.raises(UsageError, match=f"{key} must be >= 0, got -1"):
        merged_settings({key: -1}, {**UDC_QUICK, **ZUR_DEFAULTS})


def test_bops_of_one_layer_by_hand():
    """3x3 conv, 16 input channels with 8-bit activations, 32 filters with 4-bit weights, 10x10 output:
    per output pixel of a filter, 16*9 products of 8x4 bits and 16*9 additions of log2(2^4 * 9 * 16 * 2^8) bits."""
    accumulator = math.log2(2 ** 4 * 9 * 16 * 2 ** 8)
    by_hand = 100 * 32 * 9 * (16 * accumulator + 16 * 8 * 4)
    assert cost.layer_bops(3, {8: 16}, {4: 32}, 10, 10) == pytest.approx(by_hand)
    # homogeneous bitwidths give eq. 27: m n k^2 (b_a b_w + b_a + b_w + log2 n k^2) per pixel
    eq27 = 32 * 16 * 9 * (8 * 4 + 8 + 4 + math.log2(16 * 9))
    assert cost.layer_bops(3, {8: 16}, {4: 32}, 1, 1) == pytest.approx(eq27)
    # filters of two bitwidths cost the sum of their shares
    mixed = cost.layer_bops(3, {8: 16}, {4: 16, 2: 16}, 1, 1)
    assert mixed == pytest.approx(cost.layer_bops(3, {8: 16}, {4: 16}, 1, 1) + cost.layer_bops(3, {8: 16}, {2: 16}, 1, 1))


def test_unas_hinge_is_zero_under_the_target_and_linear_over_it():
    target = 1000.0
    assert hinge_penalty(torch.tensor([500.0, 999.0]), target) == 0
    assert hinge_penalty(torch.tensor([1500.0]), target) == pytest.approx(0.5)
    assert hinge_penalty(torch.tensor([900.0, 1200.0]), target) == pytest.approx(0.1)  # mean over samples
    latency = torch.tensor([1200.0], requires_grad=True)
    hinge_penalty(latency, target).backward()
    assert latency.grad.item() == pytest.approx(1 / target)


def test_latency_table_interpolates_measured_widths():
    table = cost.LatencyTable({"conv": {0.5: 250.0, 1.0: 1000.0}, "dw": {0.5: 60.0, 1.0: 100.0}}, fixed=40.0)
    assert table.layer("conv", 0.5, 1.0) == 500.0  # half the filters reading every channel: half the full work
    assert table.layer("dw", 0.5, depthwise=True) == 60.0
    # z is ordered like the decision's options, widest first, not like the table's keys
    z = torch.tensor([[0.75, 0.25]])
    relaxed = table.relaxed_layer("conv", z, (1.0, 0.5), torch.tensor([0.875]), 0.875)
    assert relaxed.item() == pytest.approx(0.75 * 1000 + 0.25 * 250)
    with pytest.raises(ValueError, match="no cycles at width 0.25"):
        table.relaxed_layer("conv", torch.tensor([[1.0, 0.0]]), (1.0, 0.25), 1.0)


def test_relaxed_latency_at_one_hot_widths_is_the_tables_latency():
    """UNAS's relaxed latency, z following each width decision's own option order, equals at a one-hot
    z the table's latency of that width: every layer at w costs cycles[w] (a convolution reading the
    image, w_in = 1, cycles[w] / w; the classifier, w_out = 1, cycles[1] * w)."""
    search = UNASSearch(synthetic(n_train=64, n_test=16), budget_bytes=30000, quiet=True)
    model = search.model
    search._build_decisions(model)
    widths = search.decisions["stem:width"].options
    assert widths == (1.0, 0.75, 0.5, 0.25)  # the settings' order, widest first
    layers = [name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)]
    # distinct, increasing with the width, as a measured table would be
    cycles = {name: {w: 1000.0 * (index + 1) * w + 7.0 * index for w in sorted(widths)}
              for index, name in enumerate(layers)}
    search.latency = cost.LatencyTable(cycles, fixed=123.0)
    for index, width in enumerate(widths):
        z = {key: F.one_hot(torch.tensor([index if key.endswith(":width") else 0]), len(d.options)).float()
             for key, d in search.decisions.items()}  # every block kept: op option 0 is the block
        by_hand = 123.0
        for name in layers:
            layer, source = model.layers[name], model.sources[name][0]
            width_out = 1.0 if name == "fc" else width
            width_in = 1.0 if source == "input" else width
            by_hand += cycles[name][width_out] * (1.0 if layer.op == "dwconv" else width_in / width_out)
        assert float(search.relaxed_latency(model, z)) == pytest.approx(by_hand, rel=1e-6)


def test_power_laws_fit_and_tau_meets_the_budget():
    alpha, beta = np.array([0.2, 0.05, 0.5]), np.array([1.1, 1.3, 0.9])
    taus = np.linspace(50, 500, 12)
    fitted_alpha, fitted_beta = fit_power_laws(taus, alpha * taus[:, None] ** beta)
    np.testing.assert_allclose(fitted_alpha, alpha, rtol=1e-6)
    np.testing.assert_allclose(fitted_beta, beta, rtol=1e-6)

    channels_in = np.array([3.0, 1.0, 1.0])

    def parameters(filters):  # a chain of dense layers: each reads the previous one's filters
        inputs = np.concatenate([[channels_in[0]], filters[:-1]])
        return float(np.sum(inputs * filters * 9))

    budget = 20_000.0
    tau = scale_to_budget(alpha, beta, parameters, budget, tau=500.0)
    assert parameters(alpha * tau ** beta) == pytest.approx(budget, rel=1e-3)
    assert scale_to_budget(alpha, beta, parameters, 2 * budget, tau=500.0) > tau  # a larger budget, a larger scale


def test_scale_to_budget_takes_the_steps_of_eq16_by_hand():
    """tau_i = tau_{i-1} - eta_abs * (h(tau_{i-1}) - t) * sum_l beta_l alpha_l tau_{i-1}^(beta_l - 1), with the one
    step eta_abs = eta * tau_0 / (t * sum_l beta_l alpha_l tau_0^(beta_l - 1)) fixed at the start."""
    alpha, beta = np.array([2.0, 0.5]), np.array([1.0, 1.5])

    def size_of(filters):  # linear in the filters
        return 3.0 * filters[0] + 5.0 * filters[1]

    def h(tau):
        return 3.0 * 2.0 * tau + 5.0 * 0.5 * tau ** 1.5

    def gradient(tau):
        return 1.0 * 2.0 + 1.5 * 0.5 * tau ** 0.5

    t, tau0, eta = 100.0, 20.0, 0.1  # both steps start over the budget
    eta_abs = eta * tau0 / (t * gradient(tau0))
    tau1 = tau0 - eta_abs * (h(tau0) - t) * gradient(tau0)
    tau2 = tau1 - eta_abs * (h(tau1) - t) * gradient(tau1)
    assert tau1 == pytest.approx(tau0 * (1 - eta * (h(tau0) / t - 1)))  # the first step, relative to the start
    assert scale_to_budget(alpha, beta, size_of, t, tau0, eta, iterations=1) == pytest.approx(tau1, rel=1e-12)
    assert scale_to_budget(alpha, beta, size_of, t, tau0, eta, iterations=2) == pytest.approx(tau2, rel=1e-12)


def test_scale_to_budget_converges_on_a_power_law_size_with_one_step_size():
    alpha, beta = np.array([4.0, 1.5, 0.8]), np.array([0.9, 1.2, 1.4])

    def size_of(filters):  # each layer's weights grow with the square of its filters: a power law of tau
        return float(np.sum(7.0 * filters ** 2))

    def gradient(tau):
        return float(np.sum(beta * alpha * tau ** (beta - 1.0)))

    taus = []

    def recorded(filters):  # the tau each step starts from, read back off Phi(tau)
        taus.append(float((filters[0] / alpha[0]) ** (1.0 / beta[0])))
        return size_of(filters)

    budget, tau0 = 100_000.0, 60.0  # the start is 9 times the budget
    tau = scale_to_budget(alpha, beta, recorded, budget, tau0)
    assert abs(size_of(alpha * tau ** beta) - budget) < 1e-3 * budget
    assert 3 < len(taus) < 2000  # several steps, stopped at the tolerance
    steps = [(before - after) / ((size_of(alpha * before ** beta) - budget) * gradient(before))
             for before, after in zip(taus, taus[1:])]
    eta = NEURALSCALE_DEFAULTS["neuralscale_eta"]
    np.testing.assert_allclose(steps, eta * tau0 / (budget * gradient(tau0)), rtol=1e-6)  # eta_abs throughout


def test_scale_to_budget_on_a_staircase_ends_on_the_step_under_the_budget():
    """Counts on a grid make the size a staircase the tolerance never meets: tau hovers at the step
    nearest the budget and ends where the configuration fits."""
    def size_of(filters):  # 100 a started filter: 1000 for tau in (9, 10], 1100 in (10, 11]
        return 100.0 * float(np.ceil(filters).sum())

    for iterations in (2000, 2001):  # whichever side of the step the last iteration lands on
        tau = scale_to_budget(np.array([1.0]), np.array([1.0]), size_of, 1050.0, 30.0, iterations=iterations)
        assert 9.5 < tau <= 10.0 and size_of(np.array([tau])) == 1000.0


class _CountingNeuralScale(NeuralScaleSearch):
    """NeuralScale recording the filter counts of every importance ranking."""

    def _importance(self, model, groups, counts, rng):
        self.rankings = [*getattr(self, "rankings", []), list(counts)]
        importance = super()._importance(model, groups, counts, rng)
        for (key, scores), count in zip(importance.items(), counts):
            assert not scores[count:].any()  # the filters already removed have no importance
        return importance


def _supernet_state(seed: int, dataset) -> dict:
    torch.manual_seed(seed)
    return make_supernet("mbv2", dataset.input_shape, dataset.num_classes, batchnorm=False,
                         bit_options=NEURALSCALE_TINY["bit_options"]).state_dict()


NEURALSCALE_TINY = {"neuralscale_batches": 1, "batch_size": 8, "bit_options": [8]}  # 8 bits: the weight ranges once


def test_iterative_ranking_ranks_the_remaining_filters_again_every_round():
    dataset = synthetic(n_train=64, n_test=16, shape=(16, 16, 1))
    search = _CountingNeuralScale(dataset, budget_bytes=30000, quiet=True, pretrained=_supernet_state(1, dataset),
                                  settings=NEURALSCALE_TINY)
    search.search()
    taus = [entry["tau"] for entry in search.history]
    assert len(search.rankings) == len(taus) - 1 > 10  # one ranking a round, a round a descent point
    assert search.rankings[0] == [search.model.layers[key].out_channels for key in search.fit["groups"]]
    assert [float(sum(counts)) for counts in search.rankings] == taus[:-1]
    counts = np.array(search.rankings)
    assert (np.diff(counts, axis=0) <= 0).all() and (counts >= 1).all()  # every group's count only falls


def test_iterative_descent_drops_the_least_important_last_filter_each_time():
    """A width keeps a group's first filters, so a lower count drops the group's last one: group a, whose
    first two filters do nothing, keeps them until its last two, which matter, are all it has left to lose."""
    calls = []

    def importance_of(counts):
        calls.append(list(counts))
        a, b = torch.tensor([0.0, 0.0, 5.0, 4.0]), torch.tensor([1.0, 2.0, 1.0, 3.0])
        return {"a": torch.where(torch.arange(4) < counts[0], a, 0.0),
                "b": torch.where(torch.arange(4) < counts[1], b, 0.0)}

    points = _descent(importance_of, [4, 4])
    assert [counts for _, counts in points] == [[4, 4], [4, 3], [4, 2], [4, 1], [3, 1], [2, 1], [1, 1]]
    assert [tau for tau, _ in points] == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]
    assert calls == [counts for _, counts in points[:-1]]  # scored anew before every round
    calls.clear()  # one-shot: one ranking of every filter, a's idle filters first
    assert [counts for _, counts in _descent(importance_of, [4, 4], iterative=False)][:3] == [[4, 4], [3, 4], [2, 4]]
    assert calls == [[4, 4]]


@pytest.mark.parametrize("from_scratch", [False, True])
def test_the_found_network_is_finetuned_from_the_pretrained_or_fresh_weights(from_scratch):
    dataset = synthetic(n_train=64, n_test=16, shape=(16, 16, 1))
    pretrained = _supernet_state(1, dataset)
    search = _CountingNeuralScale(dataset, budget_bytes=30000, quiet=True, pretrained=pretrained,
                                  settings={**NEURALSCALE_TINY, "neuralscale_ranking": "one-shot",
                                            "neuralscale_from_scratch": from_scratch})
    weights = search.search().state_dict()  # what run() finetunes
    assert len(search.rankings) == 1  # one-shot: the filters are ranked once
    fresh = _supernet_state(UDC_QUICK["seed"], dataset)  # the untrained supernet of the search's seed
    expected = fresh if from_scratch else pretrained
    assert weights.keys() == expected.keys()
    for key, value in weights.items():
        torch.testing.assert_close(value, expected[key])
    assert any(not torch.equal(weights[key], pretrained[key]) for key in weights) == from_scratch


def test_neuralscale_ranking_is_one_of_its_choices():
    """Checked where a peer's settings are loaded (the config's [neuralscale]) and where its search merges them."""
    assert checked_peer_settings("neuralscale", {"neuralscale_ranking": "one-shot"})["neuralscale_ranking"] == "one-shot"
    with pytest.raises(UsageError, match="neuralscale_ranking = 'greedy'; choose one of iterative, one-shot$"):
        checked_peer_settings("neuralscale", {"neuralscale_ranking": "greedy"})
    with pytest.raises(UsageError, match="neuralscale_ranking = 'greedy'; choose one of iterative, one-shot$"):
        merged_settings({"neuralscale_ranking": "greedy"}, {**UDC_QUICK, **NEURALSCALE_DEFAULTS})


@pytest.mark.slow
def test_peers_run_through_the_harness(tmp_path):
    out = tmp_path / "out"
    config = _config(tmp_path, TINY_SEARCH.replace('strategies = ["udc", "random"]',
                                                   'strategies = ["zur", "unas", "neuralscale"]')
                     + "[zur]\nzur_configurations = 2\n[neuralscale]\nneuralscale_batches = 2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    with Store.for_output_dir(out) as store:
        rows = {r["strategy"]: r for r in store.measurements(store.latest_run_id())}
    assert set(rows) == {"zur", "unas", "neuralscale"}
    for row in rows.values():
        assert row["status"] == "ok" and row["extra"]["search"]["constraint_met"]
    assert rows["zur"]["extra"]["search"]["bops"] > 0
    assert rows["unas"]["extra"]["search"]["latency_table_cycles"] > 0
    assert len(rows["neuralscale"]["extra"]["search"]["neuralscale_fit"]["beta"]) > 3
