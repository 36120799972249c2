"""Decision variables of the UDC strategy and their relaxations (the UDC paper's section 4 and appendix D).

A decision z ~ Cat(pi) over K options is relaxed into z-hat (Gumbel-softmax), z-tilde (Alg. 1:
Gumbel-softmax samples conditioned on agreeing with argmax pi) or a mix of both (Sec. 4.2: z-tilde
with probability vartheta). Every sampler takes ``log_pi`` of shape [..., K] (unnormalised log
probabilities are fine) and returns ``samples`` Monte-Carlo draws at once, shape [S, ..., K], so S
samples cost one batched op instead of S.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

NEWTON_ITERATIONS = 60  # at most; quadratic convergence takes a handful
NEWTON_TOLERANCE = 1e-12  # on 1/T in [0, 1], far below float32 resolution
FEASIBILITY_TOLERANCE = 1e-6  # a pi this close to the bound counts as feasible, so projection is idempotent


# ---------------------------------------------------------------- samplers


def gumbel_softmax(log_pi: torch.Tensor, tau: float, samples: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z-hat = softmax((log pi + g) / tau), g ~ Gumbel(0, 1): [S, ..., K] for log_pi [..., K]."""
    uniform = torch.rand((samples, *log_pi.shape), dtype=log_pi.dtype, device=log_pi.device, generator=generator)
    # In place: these buffers are the bulk of the cost of S samples.
    perturbed = uniform.clamp_min_(torch.finfo(log_pi.dtype).tiny).log_().neg_().log_().neg_().add_(log_pi)
    return torch.softmax(perturbed.div_(tau), dim=-1)


def _conditioned_on_argmax(log_pi: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """One Gumbel-softmax sample per row of log_pi [N, K], drawn from its distribution given argmax = argmax pi.

    The perturbed logits conditioned on their argmax b are (Maddison et al. 2014, Tucker et al. 2017)
    G_b = -log(-log u_b) and G_k = -log(-log(u_k) / pi_k - log u_b) for k != b, u uniform.
    """
    log_pi = torch.log_softmax(log_pi, dim=-1)
    neg_log_u = torch.empty_like(log_pi).exponential_(generator=generator).clamp_min(torch.finfo(log_pi.dtype).tiny)
    best = log_pi.argmax(dim=-1, keepdim=True)
    neg_log_u_best = neg_log_u.gather(-1, best)
    others = -(neg_log_u * torch.exp(-log_pi) + neg_log_u_best).log()
    perturbed = others.scatter(-1, best, -neg_log_u_best.log())
    return torch.softmax(perturbed / tau, dim=-1)


def rejection_sample(log_pi: torch.Tensor, tau: float, samples: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Alg. 1: z-tilde, the average of those of ``samples`` Gumbel-softmax draws whose argmax equals
    argmax pi: [..., K] for log_pi [..., K]. Its argmax is argmax pi; it is differentiable w.r.t. log_pi."""
    z_hat = gumbel_softmax(log_pi, tau, samples, generator)
    kept = (z_hat.argmax(dim=-1) == log_pi.argmax(dim=-1)).to(z_hat.dtype)
    kept_count = kept.sum(dim=0)
    average = (kept.unsqueeze(-1) * z_hat).sum(dim=0) / kept_count.clamp_min(1).unsqueeze(-1)
    if bool((kept_count > 0).all()):
        return average
    # Every draw rejected (likely only when pi[k*] is small and draws are few): an empty average is
    # undefined, falling back to z-hat would bring back the inflation z-tilde removes, and a hard
    # one-hot carries no gradient. One draw from the exact conditional distribution of an accepted
    # sample keeps argmax z-tilde = argmax pi and stays differentiable w.r.t. log pi.
    empty = kept_count == 0
    average = average.clone()
    average[empty] = _conditioned_on_argmax(log_pi.expand(average.shape)[empty], tau, generator)
    return average


def mixed_sample(log_pi: torch.Tensor, tau: float, samples: int, vartheta: float,
                 generator: torch.Generator | None = None, proposals: int | None = None) -> torch.Tensor:
    """Sec. 4.2: for every decision and every MC sample, z-tilde with probability vartheta, z-hat
    otherwise: [S, ..., K]. Each z-tilde is its own Alg. 1 run over ``proposals`` draws (default:
    ``samples``, as Alg. 1 draws as many proposals as there are MC samples)."""
    z_hat = gumbel_softmax(log_pi, tau, samples, generator)
    if vartheta <= 0.0:
        return z_hat
    use_tilde = torch.rand(z_hat.shape[:-1], generator=generator, device=log_pi.device) < vartheta
    if not bool(use_tilde.any()):
        return z_hat
    # Alg. 1 runs only for the (sample, decision) pairs that use z-tilde: it costs ``proposals`` draws each.
    chosen_log_pi = log_pi.expand(z_hat.shape)[use_tilde]
    mixed = z_hat.clone()
    mixed[use_tilde] = rejection_sample(chosen_log_pi, tau, proposals or samples, generator)
    return mixed


def ste_top_kappa(z_hat: torch.Tensor, kappa: int) -> torch.Tensor:
    """Appendix D eq. 12: the forward value keeps the kappa largest entries of z-hat renormalised to
    sum 1 (fewer options co-adapt through the shared weights); the backward pass is that of z-hat."""
    if kappa < 1:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    if kappa >= z_hat.shape[-1]:
        return z_hat
    top = torch.zeros_like(z_hat).scatter(-1, z_hat.topk(kappa, dim=-1).indices, 1.0)
    kept = z_hat * top
    forward = kept / kept.sum(dim=-1, keepdim=True)
    return z_hat + (forward - z_hat).detach()


# ---------------------------------------------------------------- projection (eq. 8)


def _inverse_temperatures(log_pi: np.ndarray, valid: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """beta* = 1/T* in [0, 1] per row: the largest beta with max softmax(beta * log pi) <= bound.

    With l_k = log(pi_k / max pi) <= 0, max softmax(beta * log pi) = 1 / sum_k exp(beta l_k), so beta* is the
    root of g(beta) = log sum_k exp(beta l_k) + log(bound), which is convex and decreasing with g(0) =
    log(K bound) >= 0. Newton's method from beta = 0 then climbs to the root from below, never past it (each
    tangent meets zero at or before g does), converging quadratically: every iterate is feasible.
    """
    log_ratio = np.where(valid, log_pi - np.where(valid, log_pi, -np.inf).max(-1, keepdims=True), 0.0)
    log_bounds = np.log(bounds)

    def terms(beta):
        return np.where(valid, np.exp(beta[:, None] * log_ratio), 0.0)

    feasible = 1.0 / terms(np.ones_like(bounds)).sum(-1) <= bounds + FEASIBILITY_TOLERANCE
    beta = np.zeros_like(bounds)
    for _ in range(NEWTON_ITERATIONS):
        weights = terms(beta)
        total = weights.sum(-1)
        slope = (weights * log_ratio).sum(-1) / total  # g'(beta) <= 0; 0 only for a uniform pi
        climbing = (slope < 0.0) & ~feasible
        climb = np.where(climbing, (np.log(total) + log_bounds) / np.where(climbing, -slope, 1.0), 0.0)
        beta = np.minimum(beta + np.maximum(climb, 0.0), 1.0)
        if climb.max(initial=0.0) < NEWTON_TOLERANCE:
            break
    return np.where(feasible, 1.0, beta)


def _project_rows(pi: np.ndarray, valid: np.ndarray, xi: float) -> np.ndarray:
    """Eq. 8 for every row of pi [D, K_max] (float64; entries outside ``valid`` are padding, returned as
    0); rows already in S come back unchanged. In numpy: a few hundred operations on a few hundred
    numbers, which torch would dispatch one by one at several times the cost."""
    log_pi = np.where(valid, np.log(np.maximum(pi, np.finfo(np.float64).tiny)), 0.0)
    betas = _inverse_temperatures(log_pi, valid, 1.0 / valid.sum(-1) + xi)
    tempered = np.where(valid, betas[:, None] * log_pi, -np.inf)
    tempered = np.exp(tempered - tempered.max(-1, keepdims=True))
    return np.where((betas >= 1.0)[:, None], pi, tempered / tempered.sum(-1, keepdims=True))


def _padded(vectors: Sequence[torch.Tensor], fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of different lengths as rows of one float64 array [D, K_max] and its valid entries."""
    sizes = [v.numel() for v in vectors]
    valid = np.arange(max(sizes))[None, :] < np.array(sizes)[:, None]
    padded = np.full(valid.shape, fill)
    padded[valid] = torch.cat([v.detach().view(-1) for v in vectors]).cpu().numpy()
    return padded, valid


def project(pi: torch.Tensor | Sequence[torch.Tensor], xi: float) -> torch.Tensor | list[torch.Tensor]:
    """Eq. 8: P_S(pi) = softmax(log pi / T*), T* >= 1 the smallest temperature with
    max_k P_S(pi)[k] <= 1/K + xi. Tempering keeps the order of the options; a pi already in S comes
    back unchanged, and xi >= 1 - 1/K leaves every pi in S. Accepts one pi [K], a batch [..., K], or a
    list of pis of different K (returned as a list); either way one batched bisection."""
    if xi < 0:
        raise ValueError(f"xi must be >= 0, got {xi}")
    if isinstance(pi, torch.Tensor):
        rows = pi.detach().reshape(-1, pi.shape[-1]).cpu().to(torch.float64).numpy()
        projected = _project_rows(rows, np.ones(rows.shape, bool), xi)  # unchanged rows: exact via float64
        return torch.from_numpy(projected).to(pi.dtype).reshape(pi.shape).to(pi.device)
    pis = list(pi)
    padded, valid = _padded(pis, 0.0)
    projected = _project_rows(padded, valid, xi)
    return [torch.from_numpy(row[:p.numel()]).to(p.dtype).reshape(p.shape).to(p.device)
            for row, p in zip(projected, pis)]


def projected_log_probabilities(logits: Sequence[torch.Tensor], xi: float) -> list[torch.Tensor]:
    """log P_S(softmax(l)) for each of several logit vectors (of different K): eq. 8 on the decisions'
    own parameters in one batched numpy pass, softmax and log included."""
    padded, valid = _padded(logits, -np.inf)
    pi = np.exp(padded - padded.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    log_projected = np.log(np.maximum(_project_rows(pi, valid, xi), np.finfo(np.float32).tiny))
    flat = torch.from_numpy(log_projected[valid]).to(logits[0].dtype)  # the logits' entries in order
    return [part.view(l.shape) for part, l in zip(flat.split([l.numel() for l in logits]), logits)]


# ---------------------------------------------------------------- schedules


def _clamped(progress: float) -> float:
    return min(max(progress, 0.0), 1.0)


def exponential(start: float, end: float, progress: float) -> float:
    """Geometric interpolation, e.g. tau 0.66 -> 0.1 (appendix E); progress in [0, 1]."""
    return start * (end / start) ** _clamped(progress)


def linear(start: float, end: float, progress: float) -> float:
    """Linear interpolation, e.g. xi 0.1 -> 1 and vartheta 0 -> 0.5 (appendix E); progress in [0, 1]."""
    return start + (end - start) * _clamped(progress)


# ---------------------------------------------------------------- decisions


class Decision(nn.Module):
    """A categorical decision over ``options`` with learnable logits (log pi up to a constant),
    initialised uniform."""

    def __init__(self, options: Sequence[float]):
        super().__init__()
        if not options:
            raise ValueError("a decision needs at least one option")
        self.options = tuple(options)
        self.logits = nn.Parameter(torch.zeros(len(self.options)))
        self.register_buffer("values", torch.tensor([float(o) for o in self.options]), persistent=False)

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    def argmax_index(self) -> int:
        return int(self.logits.detach().argmax())

    def argmax_option(self) -> float:
        """gamma(pi): the option the deployed network takes."""
        return self.options[self.argmax_index()]

    def expected(self, z: torch.Tensor) -> torch.Tensor:
        """sum_k z[k] * option_k: [S] for z [S, K]."""
        return z @ self.values.to(z)

    def extra_repr(self) -> str:
        return f"options={self.options}"
