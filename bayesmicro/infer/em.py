"""EM for the mixture of BT heads: closed-form responsibilities, a weighted-BT (Newton/IRLS) M-step per head.

It maximises the same objective as MAP (mixture log-likelihood + Gaussian head prior + α·H(π) + router prior):

- E-step: r_ik = P(z_i = k | chosen ≻ rejected) from ``models.bt.responsibilities``;
- M-step, heads: for each k, a few Newton steps on Σ_i r_ik log σ(w_kᵀx_i) − ‖w_k‖²/(2 s²) (batched over k);
- M-step, router: closed form π_k = mean_i r_ik for a static router without α; otherwise a few Adam steps on
  Σ_i Σ_k r_ik log π_ik(x_i) + α H(π_i) + router prior (the generalised EM step for a gating network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bayesmicro.models.bt import entropy, mixture_log_prob, responsibilities, reward_margins
from bayesmicro.models.mixture import BTMixture


@dataclass
class EMSchedule:
    max_iter: int = 300
    newton_steps: int = 2
    router_steps: int = 20
    router_lr: float = 1e-2
    tol: float = 1e-7  # relative change of the objective
    posterior: bool = True  # draws around the EM optimum as ``vi`` makes them; False: the optimum alone (one draw)


def weighted_bt_newton(heads: torch.Tensor, diff: torch.Tensor, weights: torch.Tensor, prior_scale: float,
                       steps: int) -> torch.Tensor:
    """Newton steps on Σ_i weights_ik log σ(w_kᵀx_i) − ‖w_k‖²/(2 s²) for all k at once.

    heads: (K, d); diff: (n, d); weights: (n, K). Returns the updated (K, d) heads (float64 inside).
    """
    x = diff.double()
    w = heads.double()
    r = weights.double()
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(x @ w.T)  # (n, K)
        grad = (r * (1 - p)).T @ x - w / prior_scale**2  # (K, d)
        curv = r * p * (1 - p)  # (n, K)
        hess = torch.einsum("nk,nd,ne->kde", curv, x, x) + eye / prior_scale**2  # negative Hessian
        w = w + torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
    return w.to(heads.dtype)


def fit_em_once(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, init_heads: torch.Tensor,
                schedule: EMSchedule | None = None,
                on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, dict]:
    """Run EM in place on ``model``'s router; returns (heads (K, d), info with iterations and the objective)."""
    schedule = schedule or EMSchedule()
    router = model.router
    if router_x is not None:
        router.standardize_from(router_x)
    heads = init_heads.detach().clone()
    n = diff.shape[0]
    opt = torch.optim.Adam(router.parameters(), lr=schedule.router_lr) if router.k > 1 else None
    previous, objective, iteration = -float("inf"), -float("inf"), 0
    for iteration in range(1, schedule.max_iter + 1):
        with torch.no_grad():
            log_w = router.log_weights(router_x, n)
            resp = responsibilities(log_w, reward_margins(heads, diff))
        heads = weighted_bt_newton(heads, diff, resp, model.prior_scale, schedule.newton_steps)
        if router.k > 1:
            _router_step(model, router_x, resp, opt, schedule)
        objective = _objective(model, heads, diff, router_x)
        if on_step and iteration % 10 == 0:
            on_step()
        if abs(objective - previous) <= schedule.tol * max(1.0, abs(objective)):
            break
        previous = objective
    return heads, {"iterations": iteration, "objective_per_pair": objective / n}


def _router_step(model: BTMixture, router_x, resp: torch.Tensor, opt, schedule: EMSchedule) -> None:
    router, n = model.router, resp.shape[0]
    if not router.reads_input and not model.alpha:
        with torch.no_grad():  # closed form: π_k = mean_i r_ik
            router.logits.copy_(resp.mean(0).clamp_min(1e-12).log())
        return
    for _ in range(schedule.router_steps):
        opt.zero_grad()
        log_w = router.log_weights(router_x, n)
        gain = (resp * log_w).sum() + model.alpha * entropy(log_w).sum()
        if router.reads_input:
            gain = gain + router.log_prior(model.router_prior_scale)
        (-gain / n).backward()
        opt.step()


@torch.no_grad()
def _objective(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x) -> float:
    router, n = model.router, diff.shape[0]
    log_w = router.log_weights(router_x, n)
    value = mixture_log_prob(log_w, reward_margins(heads, diff)).sum() - heads.pow(2).sum() / (2 * model.prior_scale**2)
    if model.alpha and model.k > 1:
        value = value + model.alpha * entropy(log_w).sum()
    if router.reads_input:
        value = value + router.log_prior(model.router_prior_scale)
    return float(value)
