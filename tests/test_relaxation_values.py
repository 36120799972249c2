"""Values, precision, shapes and reproducibility of the relaxations in search/relaxation.py, checked
against small references written here from the definitions."""

import math

import pytest
import torch

from search.relaxation import Decision, gumbel_softmax, mixed_sample, project, rejection_sample, ste_top_kappa


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def conditional_draws(pi, tau, count, seed):
    """Gumbel-softmax draws z = softmax((log pi + g) / tau), g = -log(-log u), kept when argmax z = argmax pi:
    draws from z-hat given that it agrees with pi, by plain rejection."""
    generator = seeded(seed)
    u = torch.rand(count, pi.numel(), generator=generator, dtype=torch.float64)
    g = -(-u.log()).log()
    z = torch.softmax((pi.double().log() + g) / tau, -1)
    return z[z.argmax(-1) == pi.argmax()]


# ---------------------------------------------------------------- z-hat


def test_gumbel_softmax_keeps_double_precision():
    log_pi = torch.log(torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    z = gumbel_softmax(log_pi, 0.5, 100, seeded(0))
    assert z.dtype == torch.float64
    assert torch.allclose(z.sum(-1), torch.ones(100, dtype=torch.float64), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- z-tilde (Alg. 1)


def test_rejection_sample_is_the_average_of_the_draws_that_agree_with_argmax_pi():
    """With the generator seeded alike, z-tilde of a row with accepted draws is the mean of exactly those
    of the z-hat draws whose argmax is argmax pi of that row; a row with none still agrees with pi."""
    generator = seeded(1)
    peaked = torch.softmax(torch.randn(6, 8, generator=generator) * 4, -1)
    flat = torch.softmax(torch.randn(6, 8, generator=generator) * 0.1, -1)
    log_pi = torch.cat([peaked, flat]).log()
    log_pi = log_pi[torch.randperm(12, generator=generator)]  # argmax pi at various positions across rows
    samples, tau = 3, 0.66
    z_hat = gumbel_softmax(log_pi, tau, samples, seeded(2))
    z_tilde = rejection_sample(log_pi, tau, samples, seeded(2))
    accepted_rows = rejected_rows = 0
    for row in range(12):
        best = int(log_pi[row].argmax())
        agreeing = [z_hat[s, row] for s in range(samples) if int(z_hat[s, row].argmax()) == best]
        if agreeing:
            accepted_rows += 1
            assert torch.allclose(z_tilde[row], sum(agreeing) / len(agreeing), atol=1e-6)
        else:
            rejected_rows += 1
        assert int(z_tilde[row].argmax()) == best
        assert float(z_tilde[row].sum()) == pytest.approx(1.0, abs=1e-5)
    assert accepted_rows > 0 and rejected_rows > 0  # both paths taken


def test_rejection_sample_is_reproducible_with_a_seeded_generator():
    """One draw per row over nearly uniform pis: most rows reject it and take the conditional draw."""
    log_pi = torch.log_softmax(torch.randn(200, 10, generator=seeded(3)) * 0.2, -1)
    first = rejection_sample(log_pi, 0.66, 1, seeded(4))
    assert torch.equal(first, rejection_sample(log_pi, 0.66, 1, seeded(4)))
    assert not torch.equal(first, rejection_sample(log_pi, 0.66, 1, seeded(5)))


@pytest.mark.parametrize("tau", [0.4, 2.5])
def test_a_single_draw_of_z_tilde_follows_z_hat_given_agreement(tau):
    """With one proposal z-tilde is one draw of z-hat conditioned on argmax z-hat = argmax pi: the accepted
    draw itself or, when it disagrees, a draw from that conditional distribution directly. Its mean over
    many rows matches the mean of conditioned draws obtained by plain rejection."""
    pi = torch.tensor([0.1, 0.3, 0.15, 0.25, 0.2])  # argmax agrees in 30% of draws: 70% take the direct draw
    rows = 20000
    z_tilde = rejection_sample(pi.log().expand(rows, 5), tau, 1, seeded(6))
    reference = conditional_draws(pi, tau, 200000, seed=7)
    assert len(reference) > 40000
    standard_error = reference.std(0) / math.sqrt(rows) + reference.std(0) / math.sqrt(len(reference))
    assert ((z_tilde.double().mean(0) - reference.mean(0)).abs() <= 5 * standard_error).all()
    assert ((z_tilde.double().std(0) - reference.std(0)).abs() <= 0.02).all()


# ---------------------------------------------------------------- mixing z-hat and z-tilde (Sec. 4.2)


def test_mixed_sample_is_reproducible_with_a_seeded_generator():
    log_pi = torch.log_softmax(torch.randn(30, 6, generator=seeded(8)) * 0.3, -1)
    first = mixed_sample(log_pi, 0.66, 16, 0.5, seeded(9), proposals=2)
    assert torch.equal(first, mixed_sample(log_pi, 0.66, 16, 0.5, seeded(9), proposals=2))
    assert not torch.equal(first, mixed_sample(log_pi, 0.66, 16, 0.5, seeded(10), proposals=2))


def test_mixed_sample_at_vartheta_zero_draws_exactly_what_z_hat_sampling_draws():
    """At vartheta 0 mixed sampling is z-hat sampling, random stream included: a seeded run continues
    identically whichever of the two it called."""
    log_pi = torch.log_softmax(torch.randn(4, 5, generator=seeded(11)), -1)
    mixed_generator, plain_generator = seeded(12), seeded(12)
    assert torch.equal(mixed_sample(log_pi, 0.66, 8, 0.0, mixed_generator),
                       gumbel_softmax(log_pi, 0.66, 8, plain_generator))
    assert torch.equal(torch.rand(16, generator=mixed_generator), torch.rand(16, generator=plain_generator))


def test_mixed_sample_chooses_z_tilde_independently_per_sample_and_decision():
    """z-tilde agrees with argmax pi always, z-hat with probability pi[k*]; each (sample, decision) pair
    chooses z-tilde with probability vartheta on its own, so two decisions both agree with probability
    (vartheta + (1 - vartheta) pi1[k*]) * (vartheta + (1 - vartheta) pi2[k*])."""
    pi = torch.stack([torch.tensor([0.16, 0.14, 0.14, 0.14, 0.14, 0.14, 0.14]),
                      torch.tensor([0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.28])])
    samples, vartheta = 6000, 0.5
    z = mixed_sample(pi.log(), 0.66, samples, vartheta, seeded(13), proposals=4)
    assert z.shape == (samples, 2, 7)
    agrees = z.argmax(-1) == pi.argmax(-1)  # [S, 2]
    marginal = vartheta + (1 - vartheta) * pi.max(-1).values
    assert torch.allclose(agrees.double().mean(0), marginal.double(), atol=0.03)
    both = float((agrees[:, 0] & agrees[:, 1]).double().mean())
    assert both == pytest.approx(float(marginal[0] * marginal[1]), abs=0.03)
    # one decision alone: each sample chooses for itself, never all samples at once
    single = mixed_sample(pi[0].log(), 0.66, samples, vartheta, seeded(14), proposals=4)
    assert single.shape == (samples, 7)
    assert float((single.argmax(-1) == 0).double().mean()) == pytest.approx(float(marginal[0]), abs=0.03)


def test_each_z_tilde_of_mixed_sample_averages_its_own_number_of_proposals():
    """With one proposal a z-tilde is a single conditioned draw, as spread as the conditional distribution;
    by default it averages as many proposals as there are samples, which all but removes the spread."""
    pi = torch.tensor([0.4, 0.3, 0.2, 0.1])
    samples, tau = 1000, 1.0
    reference_std = conditional_draws(pi, tau, 100000, seed=15).std(0)
    assert (reference_std > 0.05).all()
    single = mixed_sample(pi.log(), tau, samples, 1.0, seeded(16), proposals=1)
    assert torch.allclose(single.double().std(0), reference_std, atol=0.02)
    averaged = mixed_sample(pi.log(), tau, samples, 1.0, seeded(17))
    assert (averaged.double().std(0) < reference_std / 5).all()
    assert (averaged.argmax(-1) == 0).all()


# ---------------------------------------------------------------- STE top-kappa (appendix D)


def top_kappa_by_hand(row: list[float], kappa: int) -> list[float]:
    kept = sorted(range(len(row)), key=lambda k: row[k], reverse=True)[:kappa]
    total = sum(row[k] for k in kept)
    return [row[k] / total if k in kept else 0.0 for k in range(len(row))]


def test_ste_top_kappa_of_one_decision():
    z_hat = torch.tensor([0.1, 0.4, 0.2, 0.3])
    assert torch.allclose(ste_top_kappa(z_hat, 2), torch.tensor([0.0, 4 / 7, 0.0, 3 / 7]))


def test_ste_top_kappa_with_fewer_samples_than_options():
    z_hat = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.5, 0.1, 0.25, 0.15]])
    expected = torch.tensor([[0.0, 4 / 7, 0.0, 3 / 7], [2 / 3, 0.0, 1 / 3, 0.0]])
    assert torch.allclose(ste_top_kappa(z_hat, 2), expected)


def test_ste_top_kappa_keeps_the_largest_along_the_option_axis_of_a_batch():
    """z-hat [S, D, K] with D decisions of K options: each (sample, decision) keeps its own kappa largest."""
    z_hat = torch.softmax(torch.randn(3, 5, 4, generator=seeded(18)), -1)
    for kappa in (1, 2, 3):
        z = ste_top_kappa(z_hat, kappa)
        expected = torch.tensor([[top_kappa_by_hand(z_hat[s, d].tolist(), kappa) for d in range(5)] for s in range(3)])
        assert torch.allclose(z, expected, atol=1e-6)


def test_ste_top_kappa_refuses_kappa_below_one():
    with pytest.raises(ValueError, match=r"^kappa must be >= 1, got 0$"):
        ste_top_kappa(torch.tensor([0.5, 0.5]), 0)


# ---------------------------------------------------------------- projection (eq. 8)


@pytest.mark.parametrize("xi", [0.05, 0.1, 0.3])
def test_projection_of_double_precision_pis_meets_the_bound_to_double_precision(xi):
    pi = torch.tensor([0.8, 0.15, 0.05], dtype=torch.float64)
    bound = 1 / 3 + xi
    projected = project(pi, xi)
    assert projected.dtype == torch.float64
    assert float(projected.max()) == pytest.approx(bound, abs=1e-10)
    as_list = project([pi, torch.tensor([0.7, 0.2, 0.05, 0.03, 0.02], dtype=torch.float64)], xi)
    assert [p.dtype for p in as_list] == [torch.float64, torch.float64]
    assert float(as_list[0].max()) == pytest.approx(bound, abs=1e-10)
    assert float(as_list[1].max()) == pytest.approx(1 / 5 + xi, abs=1e-10)


def test_projection_of_a_list_of_one_pi():
    pi = torch.tensor([0.7, 0.2, 0.1])
    (projected,) = project([pi], 0.1)
    assert torch.allclose(projected, project(pi, 0.1))
    assert float(projected.max()) == pytest.approx(1 / 3 + 0.1, abs=1e-6)


def test_projection_refuses_a_negative_xi():
    with pytest.raises(ValueError, match=r"^xi must be >= 0, got -0.1$"):
        project(torch.tensor([0.5, 0.5]), -0.1)


# ---------------------------------------------------------------- decisions


def test_decision_without_options_is_refused():
    with pytest.raises(ValueError, match=r"^a decision needs at least one option$"):
        Decision(())


def test_decision_state_holds_only_its_logits():
    """The option values are rebuilt from the options, so a checkpoint carries the logits alone."""
    decision = Decision((0.25, 0.5, 1.0))
    assert set(decision.state_dict()) == {"logits"}
    restored = Decision((0.25, 0.5, 1.0))
    with torch.no_grad():
        decision.logits[1] = 2.0
    restored.load_state_dict(decision.state_dict())
    assert restored.argmax_option() == 0.5


def test_decision_expectation_in_double_precision():
    decision = Decision((1, 2, 4, 8))
    z = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    expected = decision.expected(z)
    assert expected.dtype == torch.float64
    assert float(expected) == pytest.approx(0.1 + 0.4 + 1.2 + 3.2, abs=1e-12)
