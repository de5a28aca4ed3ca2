"""Hamiltonian refinement of the linearised VI (``router_posterior="refined"``): its draws moved by HMC on the
exact network.

The linearised VI (``infer.vi.linearised``) is exact for the model whose router logits are linearised at the MAP, and
that model is the limit of its calibration (on the built-in population NUTS on it covers 0.849, the VI 0.848). This
family follows Salimans, Kingma & Welling (2015, "Markov chain Monte Carlo and variational inference: bridging the
gap"): q_T = q_0 K^T, with q_0 the linearised VI and K a Metropolis-adjusted HMC transition that leaves the *exact*
posterior p(θ | D) of the ReLU router and the heads invariant. For any such K, KL(q K ‖ p) ≤ KL(q ‖ p), so no
transition moves the draws away from the exact posterior; predictions then plug the draws into the network (as
NUTS's), not into its linearisation.

Chains run in parallel, one per starting draw of q_0, in the Laplace-whitened coordinates u = Cᵀθ (C Cᵀ = F + Λ,
so the mass matrix is the Laplace precision, as NUTS's default). Each chain's step size adapts to ``target_accept``
during ``warmup`` iterations (their states are discarded); after it, every chain's state after each of the following
iterations is a draw, ``draws`` in all (a per-chain step size: a chain started where the network is far more
curved would otherwise reject every proposal).

PSIS-LOO's importance ratios under these draws are heavier-tailed than a Gaussian's, as are those of NUTS's exact
draws; ``diagnose`` scores the pairs with Pareto k > 0.7 by mixture importance sampling instead
(``RefineSchedule(target="loo_mixture")``: the same chains on q_mix(θ) ∝ p(θ | D) Σ_i 1 / p(y_i | θ), Silva &
Zanella 2023; ``evaluate.loo.mixture_is_loo``), whose weights are bounded. The chains agree on predictions long
before they mix in parameter space; ``info["refine"]`` reports ``max_r_hat`` and ``min_ess`` over every parameter so
that this shows. Calibration, coverage and LOO figures against NUTS and the linearised VI: docs/posteriors.md.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from bayesmicro.errors import BadInput
from bayesmicro.methods import RefineTarget
from bayesmicro.infer.vi.laplace import LaplaceParams, flat_gaussian_draws, split_draws
from bayesmicro.infer.vi.linearised import linearised_vi
from bayesmicro.infer.results.mixture import drawn_logits
from bayesmicro.models.bt import entropy, mixture_log_prob, reward_margins
from bayesmicro.models.mixture import BTMixture

_CHUNK_FLOATS = 4_000_000  # (chains, pairs, hidden) activations held at once
REFINE_TARGETS = tuple(member.value for member in RefineTarget)


@dataclass(frozen=True)
class RefineSchedule:
    """HMC settings of the refinement: ``chains`` parallel chains, ``warmup`` step-size-tuning iterations, then
    iterations of ``leapfrog`` steps until ``draws`` states are kept; above ``max_pairs`` training pairs the
    linearised VI is used as it is (the cost grows with pairs × chains × iterations)."""

    chains: int = 32
    draws: int = 640
    warmup: int = 15
    leapfrog: int = 10
    target_accept: float = 0.75
    initial_step: float = 0.1
    max_pairs: int = 20_000
    # "loo_mixture": sample q_mix(θ) ∝ p(θ | D) Σ_i 1 / p(y_i | θ) instead (``ExactLogJoint``), for mixture-IS LOO
    target: str = "posterior"

    def __post_init__(self):
        if min(self.chains, self.draws, self.leapfrog) < 1 or self.warmup < 0 or not 0 < self.target_accept < 1:
            raise BadInput(f"refinement needs chains, draws, leapfrog ≥ 1, warmup ≥ 0 and 0 < target_accept < 1; "
                           f"got {self}")
        if self.target not in REFINE_TARGETS:
            raise BadInput(f"refinement target must be one of {REFINE_TARGETS}, got {self.target!r}")


class ExactLogJoint:
    """log p(D | θ) + log p(θ) + α Σ_i H(π(x_i)) of the mixture with its ReLU router — the potential of
    ``BTMixture``'s Pyro model, which NUTS samples — for rows θ (S, P) in ``layout``'s order.

    diff: (n, d); z: (n, d_r) standardised router input; prior_precision: (P,) the Gaussian prior's diagonal.
    ``loo_mixture``: add log Σ_i 1 / p(y_i | θ), the log density of Silva & Zanella's (2023) mixture of the n
    leave-one-out posteriors, q_mix(θ) ∝ p(θ | D) Σ_i 1 / p(y_i | θ) (``evaluate.loo.mixture_is_loo``)."""

    def __init__(self, model: BTMixture, layout: LaplaceParams, prior_precision: torch.Tensor, diff: torch.Tensor,
                 z: torch.Tensor, dtype: torch.dtype = torch.float32, loo_mixture: bool = False):
        self.layout, self.k, self.dim, self.dtype, self.alpha = layout, model.k, model.dim, dtype, model.alpha
        self.loo_mixture = loo_mixture
        self.net = copy.deepcopy(model.router.net).to(dtype)
        self.diff, self.z, self.prior = diff.to(dtype), z.to(dtype), prior_precision.to(dtype)
        hidden = max(s[0] for s in layout.shapes)
        self.chunk = max(1, _CHUNK_FLOATS // max(1, diff.shape[0] * hidden))

    def log_joint(self, theta: torch.Tensor) -> torch.Tensor:
        """theta: (S, P). Returns (S,)."""
        draws = {f"net.{name}": v for name, v in self.layout.unflatten(theta[:, self.layout.n_heads:]).items()}
        logits = drawn_logits(self.net, draws, self.z)
        heads = theta[:, :self.layout.n_heads].reshape(-1, self.k, self.dim)
        log_w = torch.log_softmax(logits, -1)
        pointwise = mixture_log_prob(log_w, reward_margins(heads, self.diff))  # (S, n)
        log_joint = pointwise.sum(-1)
        if self.loo_mixture:
            log_joint = log_joint + torch.logsumexp(-pointwise, -1)
        if self.alpha:
            log_joint = log_joint + self.alpha * entropy(log_w).sum(-1)
        return log_joint - 0.5 * (self.prior * theta**2).sum(-1)

    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta: (S, P). Returns ((S,) log joint, (S, P) its gradient), in chunks of rows."""
        values, grads = [], []
        for start in range(0, theta.shape[0], self.chunk):
            rows = theta[start:start + self.chunk].detach().to(self.dtype).requires_grad_(True)
            value = self.log_joint(rows)
            grads.append(torch.autograd.grad(value.sum(), rows)[0])
            values.append(value.detach())
        return torch.cat(values), torch.cat(grads)


def hmc_refine(joint: ExactLogJoint, chol: torch.Tensor, start: torch.Tensor, schedule: RefineSchedule,
               seed: int) -> tuple[torch.Tensor, dict]:
    """Run ``start.shape[0]`` HMC chains from the rows of ``start`` (S, P) targeting ``joint``, with mass matrix
    C Cᵀ (chol: C (P, P) lower). Returns (the first ``schedule.draws`` kept states (draws, P) float32, chain by
    chain — chain 0's states in order, then chain 1's, as ``evaluate.arviz.n_chains`` reads them — and info)."""
    iterations = math.ceil(schedule.draws / len(start))
    gen = torch.Generator().manual_seed(seed)
    chol = chol.to(joint.dtype)

    def theta_of(u: torch.Tensor) -> torch.Tensor:  # θ = C⁻ᵀ u
        return torch.linalg.solve_triangular(chol.T, u.T, upper=True).T

    def potential_grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # log joint and its u-gradient C⁻¹ ∇θ
        value, grad = joint.value_and_grad(theta_of(u))
        return value, torch.linalg.solve_triangular(chol, grad.T, upper=False).T

    clock = time.perf_counter()
    u = start.to(joint.dtype) @ chol
    value, grad = potential_grad(u)
    first_log_joint = float(value.mean())
    # one step size per chain, as Stan adapts one per chain: a chain started where the network is far more curved
    # than at the others would otherwise reject every proposal with the shared size and stay where it started. Each
    # chain keeps the geometric mean of its sizes over the second half of the warm-up (one iteration's acceptance
    # is a noisy signal: the last size alone can overshoot and stall the chain)
    step = torch.full((len(u), 1), schedule.initial_step, dtype=joint.dtype)
    late_log_steps, kept, accepted = [], [], []
    for iteration in range(schedule.warmup + iterations):
        momentum = torch.randn(u.shape, generator=gen, dtype=joint.dtype)
        new_u, new_p = u, momentum + 0.5 * step * grad
        for leap in range(schedule.leapfrog):
            new_u = new_u + step * new_p
            new_value, new_grad = potential_grad(new_u)
            new_p = new_p + (step if leap < schedule.leapfrog - 1 else 0.5 * step) * new_grad
        log_ratio = (new_value - 0.5 * (new_p**2).sum(-1)) - (value - 0.5 * (momentum**2).sum(-1))
        accept_prob = torch.nan_to_num(log_ratio, nan=-math.inf).clamp_max(0).exp()
        accept = torch.rand(len(u), generator=gen, dtype=joint.dtype) < accept_prob
        u = torch.where(accept[:, None], new_u, u)
        value = torch.where(accept, new_value, value)
        grad = torch.where(accept[:, None], new_grad, grad)
        if iteration < schedule.warmup:
            step = step * torch.exp(accept_prob - schedule.target_accept)[:, None]
            if iteration >= schedule.warmup // 2:
                late_log_steps.append(step.log())
            if iteration == schedule.warmup - 1:
                step = torch.stack(late_log_steps).mean(0).exp()
        else:
            kept.append(theta_of(u))
            accepted.append(accept_prob)
    by_chain = torch.stack(kept, 1)  # (chains, iterations, P)
    draws = by_chain.flatten(0, 1)[:schedule.draws].float()
    n = joint.diff.shape[0]
    by_chain_accept = torch.stack(accepted).mean(0)  # (chains,)
    info = {"chains": len(start), "warmup": schedule.warmup, "iterations": iterations,
            "leapfrog": schedule.leapfrog, "step_size": float(step.median()),
            "step_size_range": [float(step.min()), float(step.max())],
            "accept_rate": float(by_chain_accept.mean()), "min_chain_accept_rate": float(by_chain_accept.min()),
            "draw_order": "chain", "log_joint_per_pair_start": first_log_joint / n,
            "log_joint_per_pair_end": float(value.mean()) / n, "seconds": time.perf_counter() - clock}
    if len(start) > 1 and iterations >= 4 and len(draws) == by_chain.shape[0] * iterations:
        # across chains started from independent VI draws: large R̂ says the transitions have not mixed them
        info["max_r_hat"] = float(split_gelman_rubin(by_chain.double(), chain_dim=0, sample_dim=1).max())
        info["min_ess"] = float(effective_sample_size(by_chain.double(), chain_dim=0, sample_dim=1).min())
    return draws, info


def refined_vi_posterior(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor,
                         seed: int, mc_draws: int = 64,
                         schedule: RefineSchedule | None = None) -> tuple[torch.Tensor, dict, dict]:
    """The linearised VI around ``model``'s MAP router and the MAP ``heads`` (K, d), its draws refined by HMC on
    the exact network. diff: (n, d); router_x: (n, d_r). Returns (head draws (S, K, d), router draws
    {"net.<i>.<weight|bias>": (S, ...)}, info: the linearised VI's and the chains' under ``"refine"``)."""
    schedule = schedule or RefineSchedule()
    curv, chol, mean, info = linearised_vi(model, heads, diff, router_x, seed, mc_draws)
    start = flat_gaussian_draws(chol, mean, schedule.chains, seed + 1)
    joint = ExactLogJoint(model, curv.layout, curv.prior_precision, diff, model.router.standardize(router_x),
                          loo_mixture=schedule.target == RefineTarget.LOO_MIXTURE)
    draws, refine_info = hmc_refine(joint, chol, start, schedule, seed + 2)
    refine_info["target"] = schedule.target
    head_draws, router_draws = split_draws(model, curv.layout, draws)
    # "chains" beside NUTS's: the draws come chain by chain (``evaluate.arviz.n_chains``)
    return head_draws, router_draws, {**info, "router_posterior": "refined", "chains": refine_info["chains"],
                                      "refine": refine_info}
