"""Gaussian VI of the mixture with its router linearised at the MAP: the Laplace covariance, the ELBO-optimal mean.

The linearised Laplace (``infer.vi.laplace``) is a Gaussian centred on the mode. The linearised model's posterior is
not centred there: its mass lies at sharper routers (the likelihood flattens as router logits grow, so mass spreads
outward), and a mode-centred Gaussian pulls held-out probabilities toward 0.5. This posterior keeps the Laplace
covariance Σ = (F + Λ)⁻¹ and moves the mean to the maximiser of the ELBO of the linearised model,

    ELBO(m) = E_{ε ~ N(0, I)} [ log p(D | θ) + log p(θ) ],   θ = m + C⁻ᵀ ε,   C Cᵀ = F + Λ,

(the entropy of N(m, Σ) does not depend on m), where the router's logits are f(z; θ*) + J(z)(θ − θ*) — the same
predictive ``Fit`` evaluates for these draws (``linearised_router``; ``router_state`` stays the MAP, the
linearisation point). The expectation is a fixed set of antithetic draws (sample-average approximation), so the
objective is deterministic and L-BFGS maximises it in the whitened coordinates v = Cᵀ(m − θ*), where it is close to
an isotropic quadratic.

The covariance stays the Laplace one and the linearisation stays at the MAP; what that gains and what the
alternatives cost is in docs/posteriors.md (design notes).
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, jvp, vjp, vmap

from bayesmicro.infer.vi.laplace import (LaplaceCurvature, antithetic_normal, gaussian_draws, laplace_curvature,
                                      laplace_log_evidence)
from bayesmicro.models.bt import mixture_log_prob, reward_margins
from bayesmicro.models.mixture import BTMixture

_CHUNK_FLOATS = 4_000_000  # (draws, pairs, hidden) activations held at once


class LinearisedLogJoint:
    """log p(D | θ) + log p(θ) of the mixture whose router is linearised at the curvature's θ*, and its gradient.

    diff: (n, d); z: (n, d_r) standardised router input; θ draws are rows of (S, P) in the curvature's layout.
    """

    def __init__(self, model: BTMixture, curv: LaplaceCurvature, diff: torch.Tensor, z: torch.Tensor):
        self.curv, self.k, self.dim = curv, model.k, model.dim
        self.diff = diff.double()
        net = copy.deepcopy(model.router.net).double()
        self.center = curv.layout.unflatten(curv.theta[curv.layout.n_heads:])

        def router(params):
            return functional_call(net, params, (z.double(),))

        self._router = router
        self.base, self._pullback = vjp(router, self.center)  # f(z; θ*) (n, K) and v ↦ J(z)ᵀ v
        hidden = max(s[0] for s in curv.layout.shapes)
        self.chunk = max(1, _CHUNK_FLOATS // max(1, diff.shape[0] * hidden))

    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta: (S, P) float64. Returns ((S,) log joint, (S, P) its gradient)."""
        values, grads = zip(*(self._chunk(theta[i:i + self.chunk]) for i in range(0, theta.shape[0], self.chunk)))
        return torch.cat(values), torch.cat(grads)

    def router_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(S, n, K) linearised router logits f(z; θ*) + J(z)(θ − θ*) for θ draws (S, P)."""
        n_heads = self.curv.layout.n_heads
        tangents = self.curv.layout.unflatten(theta[:, n_heads:] - self.curv.theta[n_heads:])
        return self.base + vmap(lambda t: jvp(self._router, (self.center,), (t,))[1])(tangents)

    def _chunk(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_heads, layout = self.curv.layout.n_heads, self.curv.layout
        logits = self.router_logits(theta).detach().requires_grad_(True)
        heads = theta[:, :n_heads].reshape(-1, self.k, self.dim).clone().requires_grad_(True)
        log_lik = mixture_log_prob(torch.log_softmax(logits, -1), reward_margins(heads, self.diff)).sum(-1)
        log_lik.sum().backward()
        router_grad = vmap(self._pullback)(logits.grad)[0]
        grad = torch.cat([heads.grad.reshape(len(theta), -1)]
                         + [router_grad[name].reshape(len(theta), -1) for name in layout.names], 1)
        prior = self.curv.prior_precision
        return log_lik.detach() - 0.5 * (prior * theta**2).sum(-1), grad - prior * theta


def expected_log_joint(joint: LinearisedLogJoint, chol: torch.Tensor, whitened: torch.Tensor,
                       noise: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The average log joint over θ_s = θ* + C⁻ᵀ(v + ε_s) and its gradient in v. chol: C (P, P) lower;
    whitened: v (P,); noise: ε (P, S)."""
    offset = torch.linalg.solve_triangular(chol.T, whitened[:, None] + noise, upper=True)
    value, grad = joint.value_and_grad(joint.curv.theta + offset.T)
    return float(value.mean()), torch.linalg.solve_triangular(chol, grad.mean(0)[:, None], upper=False)[:, 0]


def optimal_mean(joint: LinearisedLogJoint, chol: torch.Tensor, mc_draws: int, seed: int,
                 max_iter: int = 100) -> tuple[torch.Tensor, dict]:
    """The mean m (P,) maximising the sample-average ELBO over ``mc_draws`` antithetic draws of N(m, (C Cᵀ)⁻¹);
    chol: C (P, P) lower. Returns (m, info: expected log joint per pair at θ* and at m, L-BFGS evaluations, and
    the whitened shift ‖Cᵀ(m − θ*)‖)."""
    noise = antithetic_normal(joint.curv.theta.numel(), max(2, mc_draws), seed)
    whitened = torch.zeros_like(joint.curv.theta, requires_grad=True)
    values = []

    def negative_elbo() -> torch.Tensor:
        value, grad = expected_log_joint(joint, chol, whitened.detach(), noise)
        whitened.grad = -grad
        values.append(value)
        return torch.tensor(-value, dtype=torch.float64)

    torch.optim.LBFGS([whitened], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                      tolerance_grad=1e-6, tolerance_change=1e-10).step(negative_elbo)
    v = whitened.detach()
    n = joint.diff.shape[0]
    info = {"expected_log_joint_per_pair_at_map": values[0] / n,
            "expected_log_joint_per_pair": expected_log_joint(joint, chol, v, noise)[0] / n,
            "evaluations": len(values), "mean_shift": float(v.norm())}
    return joint.curv.theta + torch.linalg.solve_triangular(chol.T, v[:, None], upper=True)[:, 0], info


def linearised_vi_posterior(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor,
                            draws: int, seed: int, mc_draws: int = 64) -> tuple[torch.Tensor, dict, dict]:
    """Draws from N(m, (F + Λ)⁻¹) with m the ELBO-optimal mean of the linearised model, around ``model``'s MAP
    router and the MAP ``heads`` (K, d). diff: (n, d); router_x: (n, d_r). Returns (head draws (S, K, d), router
    draws {"net.<i>.<weight|bias>": (S, ...)}, info), the draws in antithetic pairs m ± δ."""
    curv, chol, mean, info = linearised_vi(model, heads, diff, router_x, seed, mc_draws)
    head_draws, router_draws = gaussian_draws(model, curv, chol, mean, draws, seed + 1)
    return head_draws, router_draws, info


def linearised_vi(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor, seed: int,
                  mc_draws: int = 64) -> tuple[LaplaceCurvature, torch.Tensor, torch.Tensor, dict]:
    """The linearised VI around the MAP: (curvature at the MAP, Cholesky factor C of F + Λ, ELBO-optimal mean (P,),
    info)."""
    curv = laplace_curvature(model, heads, diff, router_x)
    chol = torch.linalg.cholesky(curv.precision())
    joint = LinearisedLogJoint(model, curv, diff, model.router.standardize(router_x))
    mean, info = optimal_mean(joint, chol, mc_draws, seed)
    info = {"router_posterior": "linearised", "curvature": "fisher (GGN)", "parameters": curv.layout.size,
            "mc_draws": mc_draws, "log_evidence": laplace_log_evidence(curv, chol), **info}
    return curv, chol, mean, info
