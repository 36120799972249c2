import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from search.cost import layer_macs, relaxed_binary_entropy, relaxed_layer_size_bits, relaxed_macs, size_penalty
from search.relaxation import (
    Decision, exponential, gumbel_softmax, linear, mixed_sample, project, rejection_sample, ste_top_kappa,
)


def random_pis(count, seed=0, sizes=(2, 3, 4, 7, 10), scales=(0.3, 1.0, 3.0, 6.0)):
    """Categorical distributions from nearly uniform to sharply peaked, of several sizes."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(sizes[i % len(sizes)], generator=generator) * scales[i % len(scales)], -1)
            for i in range(count)]


# ---------------------------------------------------------------- projection


@pytest.mark.parametrize("xi", [0.02, 0.1, 0.3, 0.5])
def test_projection_meets_the_bound_keeps_the_order_and_sums_to_one(xi):
    for pi in random_pis(200):
        projected = project(pi, xi)
        size = pi.numel()
        assert float(projected.max()) <= 1 / size + xi + 1e-5
        assert torch.isclose(projected.sum(), torch.tensor(1.0), atol=1e-6)
        assert torch.equal(torch.argsort(projected, stable=True), torch.argsort(pi, stable=True))
        if float(pi.max()) > 1 / size + xi + 1e-5:  # it had to move: onto the boundary, not inside it
            assert float(projected.max()) == pytest.approx(1 / size + xi, abs=1e-5)


def test_projection_leaves_a_feasible_pi_unchanged_and_is_idempotent():
    for pi in random_pis(200, seed=1):
        once = project(pi, 0.2)
        assert torch.equal(project(once, 0.2), once)
        if float(pi.max()) <= 1 / pi.numel() + 0.2:
            assert torch.equal(once, pi)


def test_projection_without_a_constraint_and_with_xi_zero():
    for pi in random_pis(50, seed=2):
        assert torch.equal(project(pi, 1.0 - 1.0 / pi.numel()), pi)
        assert torch.allclose(project(pi, 0.0), torch.full_like(pi, 1.0 / pi.numel()), atol=1e-6)


def test_projection_batches_decisions_of_different_sizes():
    pis = random_pis(12, seed=3)
    projected = project(pis, 0.1)
    assert isinstance(projected, list)
    for pi, p in zip(pis, projected):
        assert torch.allclose(p, project(pi, 0.1), atol=1e-7)
    same_size = torch.stack([pi for pi in pis if pi.numel() == 10])
    assert torch.allclose(project(same_size, 0.1), torch.stack([project(pi, 0.1) for pi in same_size]), atol=1e-7)


def test_projection_keeps_ties_and_handles_zero_probabilities():
    tied = project(torch.tensor([0.4, 0.4, 0.1, 0.1]), 0.05)
    assert tied[0] == tied[1] and tied[2] == tied[3] and tied[0] > tied[2]
    assert float(tied.max()) <= 0.3 + 1e-6
    one_hot = project(torch.tensor([0.0, 1.0, 0.0, 0.0]), 0.25)
    assert int(one_hot.argmax()) == 1 and float(one_hot.max()) == pytest.approx(0.5, abs=1e-5)
    assert torch.isfinite(one_hot).all() and (one_hot > 0).all()


# ---------------------------------------------------------------- samplers


def test_gumbel_softmax_lies_on_the_simplex_and_its_argmax_follows_pi():
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05])
    z = gumbel_softmax(pi.log(), 0.66, 40000, torch.Generator().manual_seed(0))
    assert z.shape == (40000, 4)
    assert (z >= 0).all() and torch.allclose(z.sum(-1), torch.ones(40000), atol=1e-5)
    frequencies = torch.bincount(z.argmax(-1), minlength=4) / 40000
    tolerance = 5 * torch.sqrt(pi * (1 - pi) / 40000)  # five binomial standard errors
    assert ((frequencies - pi).abs() <= tolerance).all()


def test_gumbel_softmax_batches_decisions_and_is_reproducible():
    log_pi = torch.log_softmax(torch.randn(5, 3), -1)
    first = gumbel_softmax(log_pi, 1.0, 7, torch.Generator().manual_seed(4))
    assert first.shape == (7, 5, 3)
    assert torch.equal(first, gumbel_softmax(log_pi, 1.0, 7, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("tau", [0.1, 0.66, 1.0, 10.0])
@pytest.mark.parametrize("samples", [1, 4, 32])
def test_rejection_sample_agrees_with_argmax_pi(tau, samples):
    pis = random_pis(300, seed=5)
    generator = torch.Generator().manual_seed(6)
    for pi in pis:
        z_tilde = rejection_sample(pi.log(), tau, samples, generator)
        assert int(z_tilde.argmax()) == int(pi.argmax())
        assert torch.isclose(z_tilde.sum(), torch.tensor(1.0), atol=1e-5)
    # one batched call over many rows with a single proposal each: most rows take the fallback
    batch = torch.softmax(torch.randn(500, 10, generator=generator) * 0.3, -1)
    z_tilde = rejection_sample(batch.log(), tau, samples, generator)
    assert z_tilde.shape == (500, 10)
    assert torch.equal(z_tilde.argmax(-1), batch.argmax(-1))


@pytest.mark.parametrize("samples", [1, 32])
def test_rejection_sample_passes_gradients_to_log_pi(samples):
    logits = torch.randn(64, 6, generator=torch.Generator().manual_seed(7), requires_grad=True)
    z_tilde = rejection_sample(torch.log_softmax(logits, -1), 0.66, samples, torch.Generator().manual_seed(8))
    (z_tilde * torch.arange(6.0)).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad.abs().sum(-1) > 0).all()


def test_mixed_sample_interpolates_between_z_hat_and_z_tilde():
    pi = torch.softmax(torch.randn(8, 5, generator=torch.Generator().manual_seed(9)), -1)
    z_hat = gumbel_softmax(pi.log(), 0.66, 3000, torch.Generator().manual_seed(10))
    assert torch.equal(mixed_sample(pi.log(), 0.66, 3000, 0.0, torch.Generator().manual_seed(10)), z_hat)
    all_tilde = mixed_sample(pi.log(), 0.66, 3000, 1.0, torch.Generator().manual_seed(10), proposals=8)
    assert all_tilde.shape == (3000, 8, 5)
    assert (all_tilde.argmax(-1) == pi.argmax(-1)).all()
    # z-tilde agrees with argmax pi always, z-hat with probability pi[k*]
    half = mixed_sample(pi.log(), 0.66, 3000, 0.5, torch.Generator().manual_seed(10), proposals=8)
    agreement = (half.argmax(-1) == pi.argmax(-1)).float().mean(0)
    expected = 0.5 + 0.5 * pi.max(-1).values
    assert torch.allclose(agreement, expected, atol=0.04)


def test_mixed_sample_passes_gradients_to_log_pi():
    logits = torch.zeros(4, requires_grad=True)
    z = mixed_sample(torch.log_softmax(logits, -1), 0.66, 16, 0.5, torch.Generator().manual_seed(11), proposals=4)
    (z * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------- STE top-kappa


@pytest.mark.parametrize("kappa", [1, 2, 3])
def test_ste_top_kappa_forward_keeps_kappa_entries_and_backward_is_that_of_z_hat(kappa):
    logits = torch.randn(6, generator=torch.Generator().manual_seed(12), requires_grad=True)
    z_hat = gumbel_softmax(torch.log_softmax(logits, -1), 1.0, 64, torch.Generator().manual_seed(13))
    z = ste_top_kappa(z_hat, kappa)
    assert ((z != 0).sum(-1) == kappa).all()
    assert torch.allclose(z.sum(-1), torch.ones(64), atol=1e-6)
    top = z_hat.topk(kappa, -1).indices
    assert torch.equal(torch.sort(torch.nonzero(z)[:, 1].view(64, kappa), -1).values, torch.sort(top, -1).values)
    kept = z_hat.gather(-1, top)
    assert torch.allclose(z.gather(-1, top), kept / kept.sum(-1, keepdim=True), atol=1e-6)

    weights = torch.randn(64, 6, generator=torch.Generator().manual_seed(14))
    (through_ste,) = torch.autograd.grad((z * weights).sum(), logits, retain_graph=True)
    (through_z_hat,) = torch.autograd.grad((z_hat * weights).sum(), logits)
    assert torch.allclose(through_ste, through_z_hat, atol=1e-6)


def test_ste_top_kappa_with_kappa_equal_to_k_is_the_identity():
    z_hat = torch.softmax(torch.randn(3, 4), -1)
    assert ste_top_kappa(z_hat, 4) is z_hat


# ---------------------------------------------------------------- schedules and decisions


def test_schedules():
    assert exponential(0.66, 0.1, 0.0) == pytest.approx(0.66)
    assert exponential(0.66, 0.1, 1.0) == pytest.approx(0.1)
    assert exponential(0.66, 0.1, 0.5) == pytest.approx(math.sqrt(0.066))
    assert linear(0.1, 1.0, 0.5) == pytest.approx(0.55)
    assert linear(0.0, 0.5, 1.0) == pytest.approx(0.5)
    assert linear(0.0, 0.5, 1.2) == pytest.approx(0.5)  # progress is clamped to [0, 1]


def test_decision_starts_uniform_and_computes_expected_options():
    decision = Decision((1, 2, 4, 8))
    assert decision.options == (1, 2, 4, 8)
    assert torch.allclose(decision.probs(), torch.full((4,), 0.25))
    with torch.no_grad():
        decision.logits[2] = 1.0
    assert decision.argmax_option() == 4
    z = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert torch.allclose(decision.expected(z), torch.tensor([4.0, 1.5]))


# ---------------------------------------------------------------- size model


def one_hot(decision, option):
    return F.one_hot(torch.tensor([decision.options.index(option)]), len(decision.options)).float()


@pytest.mark.parametrize("nonzero,bits", [(0.3, 4), (1.0, 8), (0.5, 1), (0.1, 2)])
def test_relaxed_size_with_one_hot_z_is_the_scalar_size(nonzero, bits):
    widths, bit_options = Decision((0.25, 0.5, 1.0)), Decision((1, 2, 4, 8))
    nonzero_options = Decision((0.1, 0.3, 0.5, 1.0))
    n_full = 3 * 3 * 16 * 32
    size = relaxed_layer_size_bits(n_full, nonzero_options.expected(one_hot(nonzero_options, nonzero)),
                                   bit_options.expected(one_hot(bit_options, bits)),
                                   widths.expected(one_hot(widths, 0.5)), widths.expected(one_hot(widths, 0.25)))
    active = 3 * 3 * (16 // 4) * (32 // 2)  # input channels at width 0.25, filters at width 0.5
    by_hand = active * (nonzero * bits - (nonzero * math.log2(nonzero) + (1 - nonzero) * math.log2(1 - nonzero)
                                          if nonzero < 1 else 0.0))
    assert float(size) == pytest.approx(by_hand, rel=1e-6)


def test_relaxed_binary_entropy_matches_hand_values_and_is_safe_at_the_ends():
    s = torch.tensor([0.0, 1e-9, 0.1, 0.5, 0.9, 1.0], requires_grad=True)
    entropy = relaxed_binary_entropy(s)
    assert entropy[0] == 0 and entropy[-1] == 0
    h_tenth = -(0.1 * math.log2(0.1) + 0.9 * math.log2(0.9))  # 0.46900 bits
    # at 1e-9 the clamp to 1e-6 gives H2(1e-6) = 2.1e-5 instead of 3.1e-8: well within 1e-4
    by_hand = torch.tensor([0.0, 0.0, h_tenth, 1.0, h_tenth, 0.0])
    assert torch.allclose(entropy, by_hand, atol=1e-4)
    entropy.sum().backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("nonzero,bits", [(0.2, 4), (0.5, 1), (0.6, 8), (0.7, 2), (0.9, 1), (0.95, 2)])
def test_size_gradient_in_nonzero_has_the_sign_of_the_bound(nonzero, bits):
    """d eps / d s = N * (b + log2((1 - s) / s)): positive except for dense-ish low-bit layers, where
    dropping the mask (H2 -> 0) saves more than the extra nonzeros cost."""
    s = torch.tensor(nonzero, requires_grad=True)
    relaxed_layer_size_bits(1000, s, torch.tensor(float(bits)), torch.tensor(1.0)).backward()
    analytic = 1000 * (bits + math.log2((1 - nonzero) / nonzero))
    assert float(s.grad) == pytest.approx(analytic, rel=1e-4)
    assert math.copysign(1, float(s.grad)) == math.copysign(1, analytic)


def test_the_bound_prices_half_density_at_two_bits_like_dense_two_bits():
    """2*0.5 + H2(0.5) = 2*1 + H2(1): a space offering both breaks Lemma 4.2's distinct-cost assumption."""
    half, dense = relaxed_layer_size_bits(100, torch.tensor([0.5, 1.0]), torch.tensor(2.0), torch.tensor(1.0))
    assert float(half) == float(dense) == 200.0


def test_size_penalty_is_relative_to_the_target():
    assert float(size_penalty(torch.tensor([100.0, 120.0, 80.0]), 100.0)) == pytest.approx(40 / 300)
    assert float(size_penalty(torch.tensor([1000.0, 1200.0, 800.0]), 1000.0)) == pytest.approx(40 / 300)


def test_macs_per_operator_and_at_expected_widths():
    assert layer_macs("conv", 3, 16, 32, 14, 14) == 9 * 16 * 32 * 14 * 14
    assert layer_macs("dwconv", 3, 64, 64, 7, 7) == 9 * 64 * 7 * 7
    assert layer_macs("dense", 1, 192, 10) == 1920
    with pytest.raises(ValueError, match="no MAC count"):
        layer_macs("add", 1, 1, 1)
    full = layer_macs("conv", 3, 16, 32, 14, 14)
    width = torch.tensor(0.5, requires_grad=True)
    macs = relaxed_macs(full, width, torch.tensor(0.5))
    assert float(macs.detach()) == pytest.approx(full / 4)
    macs.backward()
    assert float(width.grad) == pytest.approx(full / 2)


# ---------------------------------------------------------------- Lemmas 4.1 and 4.2 on a tiny space

TINY = {"bits": (2, 4, 8), "nonzero": (0.25, 0.5, 0.75), "width": (0.5, 1.0)}
TINY_N = 1000


def tiny_size(config):
    return float(relaxed_layer_size_bits(TINY_N, torch.tensor(config["nonzero"]), torch.tensor(float(config["bits"])),
                                         torch.tensor(config["width"])))


def configurations():
    for values in itertools.product(*TINY.values()):
        yield dict(zip(TINY, values))


def exact_penalty(pis, target):
    """E_z |E(z) - e*| / e* by enumeration, z ~ Cat(pi) one-hot per decision."""
    total = 0.0
    for config in configurations():
        probability = math.prod(float(pis[name][TINY[name].index(config[name])]) for name in TINY)
        total += probability * float(size_penalty(torch.tensor([tiny_size(config)]), target))
    return total


def one_hot_pis(config):
    return {name: F.one_hot(torch.tensor(TINY[name].index(config[name])), len(TINY[name])).float() for name in TINY}


def argmax_config(pis):
    return {name: TINY[name][int(pis[name].argmax())] for name in TINY}


def test_tiny_space_has_distinct_costs_per_decision():
    for config in configurations():
        for name, options in TINY.items():
            sizes = [tiny_size({**config, name: option}) for option in options]
            assert len(set(sizes)) == len(sizes)


def test_lemma_4_1_zero_penalty_iff_every_configuration_meets_the_target():
    generator = torch.Generator().manual_seed(15)
    for chosen in configurations():
        target = tiny_size(chosen)
        assert exact_penalty(one_hot_pis(chosen), target) == 0.0
        # exact categorical samples: one-hot draws from Cat(pi)
        samples = {}
        for name, options in TINY.items():
            draws = torch.multinomial(one_hot_pis(chosen)[name], 200, True, generator=generator)
            samples[name] = Decision(options).expected(F.one_hot(draws, len(options)).float())
        sizes = relaxed_layer_size_bits(TINY_N, samples["nonzero"], samples["bits"], samples["width"])
        assert float(size_penalty(sizes, target)) == 0.0
    for index in range(100):
        pis = {name: torch.softmax(torch.randn(len(options), generator=generator) * (1 + index % 4), -1)
               for name, options in TINY.items()}
        violated = [c for c in configurations() if tiny_size(c) != tiny_size(argmax_config(pis))]
        assert exact_penalty(pis, tiny_size(violated[index % len(violated)])) > 0.0


def test_lemma_4_2_zero_penalty_only_for_one_hot_pi():
    for chosen in configurations():
        target = tiny_size(chosen)
        for name, options in TINY.items():
            for other in options:
                if other == chosen[name]:
                    continue
                for weight in (1e-3, 0.3):
                    pis = one_hot_pis(chosen)
                    pis[name] = (1 - weight) * pis[name] + weight * one_hot_pis({**chosen, name: other})[name]
                    assert exact_penalty(pis, target) > 0.0
    generator = torch.Generator().manual_seed(16)
    for _ in range(50):
        pis = {name: torch.softmax(torch.randn(len(options), generator=generator) * 4, -1)
               for name, options in TINY.items()}
        assert exact_penalty(pis, tiny_size(argmax_config(pis))) > 0.0
