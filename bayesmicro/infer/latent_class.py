"""Fitting the per-user latent class BT mixture.

``method="em"`` (default): maximum likelihood by EM — exact per-user responsibilities (E-step), Newton steps for
each head's weighted logistic regression and L-BFGS for the router's soft-target cross-entropy (M-step) — from
random hard user partitions (flexmix's start), then an L-BFGS polish of the exact marginal log-likelihood; the best
of ``restarts`` wins. ``method="map"``: MAP in Pyro (AutoDelta, ``Trace_ELBO()(model, guide)`` as a torch loss,
AdamW over minibatches of users).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.methods import Inference
from bayesmicro.models.latent_class import (LinearRouter, UserLatentClassBT, UserPairs, component_log_lik, make_router,
                                            user_log_lik, user_responsibilities)

METHODS = ("em", "map")


@dataclass
class LatentClassFit:
    """A fitted per-user latent class model: heads (K, d), the router, per-user responsibilities (U, K)."""

    heads: torch.Tensor
    router: torch.nn.Module
    loglik: float
    responsibilities: torch.Tensor
    users: np.ndarray
    n_pairs: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.heads.shape[0]

    @torch.no_grad()
    def log_lik(self, data: UserPairs) -> torch.Tensor:
        """(U,) each user's marginal log-likelihood."""
        return _user_ll(self.heads, self.router, data)

    @torch.no_grad()
    def user_weights(self, covariates: torch.Tensor) -> torch.Tensor:
        """(U, K) prior class probabilities π(c_u) from the router."""
        return self.router.log_weights(covariates.float(), covariates.shape[0]).exp()


def _user_ll(heads: torch.Tensor, router: torch.nn.Module, data: UserPairs) -> torch.Tensor:
    log_w = router.log_weights(data.covariates, data.n_users)
    return user_log_lik(log_w, component_log_lik(heads, data.diff, data.user_index, data.n_users))


def n_parameters(k: int, n_items: int, n_covariates: int) -> int:
    """Free parameters: K worth vectors of n_items − 1 (reference item fixed at 0) and K − 1 logit rows of
    n_covariates + 1 (coefficients and intercept; one class is the reference)."""
    return k * (n_items - 1) + (k - 1) * (n_covariates + 1)


def bic(loglik: float, n_params: int, n_obs: int) -> float:
    """−2·LL + p·log(n)."""
    return -2.0 * loglik + n_params * math.log(n_obs)


def fit_latent_class(
    data: EmbeddedPairs | UserPairs,
    k: int,
    *,
    restarts: int = 10,
    seed: int = 0,
    hidden: int = 0,
    method: str = "em",
    em_iterations: int = 15,
    prior_scale: float = 10.0,
    epochs: int = 200,
    batch_users: int = 64,
    lr: float = 0.05,
) -> LatentClassFit:
    """Fit K classes; pairs of a user share one class, the router reads the user's covariates (``prompt``).

    EM maximises the plain likelihood (flexmix's objective); ``map`` adds a Normal(0, prior_scale) prior on heads.
    """
    if method not in METHODS:
        raise BadInput(f"method must be one of {METHODS}, got {method!r}")
    if k < 1:
        raise BadInput(f"k must be ≥ 1, got {k}")
    if restarts < 1:
        raise BadInput(f"restarts must be ≥ 1, got {restarts}")
    up = data if isinstance(data, UserPairs) else UserPairs.from_pairs(data)
    # float64: the polish's line search must resolve log-likelihood changes far below float32's resolution
    up = UserPairs(up.diff.double(), up.user_index, up.covariates.double(), up.users, up.offsets)
    if k > up.n_users:
        raise BadInput(f"k = {k} is larger than the number of users ({up.n_users})")
    start = time.perf_counter()
    history, best = [], None
    for restart in range(1 if k == 1 else restarts):
        gen = torch.Generator().manual_seed(seed * 1000 + restart)
        router = make_router(k, up.covariates.shape[1], hidden).double()
        router.standardize_from(up.covariates)
        if method == Inference.EM:
            heads = _em(up, k, router, gen, em_iterations)
            heads = _polish(up, heads, router)
        else:
            up32 = UserPairs(up.diff.float(), up.user_index, up.covariates.float(), up.users, up.offsets)
            heads = _map(up32, k, router.float(), gen, prior_scale, epochs, batch_users, lr, seed * 1000 + restart)
            heads, router = heads.double(), router.double()
        with torch.no_grad():
            loglik = float(_user_ll(heads, router, up).sum())
        history.append({"restart": restart, "loglik": loglik})
        if best is None or loglik > best[0]:
            best = (loglik, heads, router)
    loglik, heads, router = best
    with torch.no_grad():
        resp = user_responsibilities(router.log_weights(up.covariates, up.n_users),
                                     component_log_lik(heads, up.diff, up.user_index, up.n_users))
    return LatentClassFit(heads=heads, router=router, loglik=loglik, responsibilities=resp, users=up.users,
                          n_pairs=up.diff.shape[0],
                          summary={"restarts": history, "fit_seconds": time.perf_counter() - start,
                                   "method": method})


def _em(up: UserPairs, k: int, router: torch.nn.Module, gen: torch.Generator, iterations: int) -> torch.Tensor:
    """EM from a random hard partition of the users; returns heads (K, d) and fits ``router`` in place."""
    d = up.diff.shape[1]
    resp = torch.nn.functional.one_hot(torch.randint(0, k, (up.n_users,), generator=gen), k).to(up.diff.dtype)
    heads = torch.zeros(k, d, dtype=up.diff.dtype)
    for _ in range(iterations):
        heads = _weighted_logistic_newton(up.diff, resp[up.user_index], heads, steps=2)
        _fit_router(router, up.covariates, resp, max_iter=10)
        with torch.no_grad():
            resp = user_responsibilities(router.log_weights(up.covariates, up.n_users),
                                         component_log_lik(heads, up.diff, up.user_index, up.n_users))
    return heads


def _weighted_logistic_newton(x: torch.Tensor, weight: torch.Tensor, heads: torch.Tensor, steps: int,
                              ridge: float = 1e-6) -> torch.Tensor:
    """Newton steps on Σ_i weight_ik log σ(w_kᵀ x_i) for every k at once. x (n, d), weight (n, K), heads (K, d)."""
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    for _ in range(steps):
        prob = torch.sigmoid(x @ heads.T)  # (n, K)
        grad = (weight * (1 - prob)).T @ x - ridge * heads  # (K, d)
        curv = torch.einsum("nk,ni,nj->kij", weight * prob * (1 - prob), x, x) + ridge * eye
        heads = heads + torch.linalg.solve(curv, grad.unsqueeze(-1)).squeeze(-1)
    return heads


def _fit_router(router: torch.nn.Module, covariates: torch.Tensor, resp: torch.Tensor, max_iter: int) -> None:
    """M-step for the router: maximise Σ_u Σ_k r_uk log π_k(c_u) (in place)."""
    if resp.shape[1] == 1:
        return
    if isinstance(router, LinearRouter):
        _multinomial_newton(router, covariates, resp, steps=2)
        return
    params = [p for p in router.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(resp * router.log_weights(covariates, covariates.shape[0])).sum() / covariates.shape[0]
        loss.backward()
        return loss

    opt.step(closure)


@torch.no_grad()
def _multinomial_newton(router: LinearRouter, covariates: torch.Tensor, resp: torch.Tensor, steps: int,
                        ridge: float = 1e-8) -> None:
    """Newton steps for the multinomial logit with soft targets ``resp`` (U, K) (in place)."""
    z = (covariates - router.input_mean) / router.input_scale
    z1 = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)  # (U, p + 1)
    k, width = resp.shape[1], z1.shape[1]
    theta = torch.cat([router.linear.weight, router.linear.bias[:, None]], 1)  # (K, p + 1)
    for _ in range(steps):
        prob = torch.softmax(z1 @ theta.T, -1)  # (U, K)
        grad = (resp - prob).T @ z1  # (K, p + 1)
        cross = torch.einsum("uj,uk,ua,ub->jakb", prob, prob, z1, z1)
        diag = torch.einsum("uj,ua,ub->jab", prob, z1, z1)
        curv = -cross
        curv[torch.arange(k), :, torch.arange(k), :] += diag
        curv = curv.reshape(k * width, k * width) + ridge * torch.eye(k * width, dtype=z.dtype)
        theta = theta + torch.linalg.solve(curv, grad.reshape(-1)).reshape(k, width)
    theta = theta - theta.mean(0)  # softmax is unchanged by a shift shared by all classes
    router.linear.weight.copy_(theta[:, :-1])
    router.linear.bias.copy_(theta[:, -1])


def _polish(up: UserPairs, heads: torch.Tensor, router: torch.nn.Module, max_iter: int = 200) -> torch.Tensor:
    """L-BFGS on the exact marginal log-likelihood over heads and router together."""
    heads = heads.clone().requires_grad_(True)
    params = [heads, *(p for p in router.parameters() if p.requires_grad)]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -_user_ll(heads, router, up).sum() / up.diff.shape[0]
        loss.backward()
        return loss

    opt.step(closure)
    return heads.detach()


def _map(up: UserPairs, k: int, router: torch.nn.Module, gen: torch.Generator, prior_scale: float, epochs: int,
         batch_users: int, lr: float, seed: int) -> torch.Tensor:
    """MAP in Pyro with AdamW over minibatches of users; the model's router is ``router`` (trained in place)."""
    pyro.set_rng_seed(seed)
    model = UserLatentClassBT(up.diff.shape[1], k, up.covariates.shape[1], prior_scale=prior_scale)
    model.router = router
    init = torch.randn(k, up.diff.shape[1], generator=gen) * 0.5
    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"heads": init}))
    elbo = Trace_ELBO()(model, guide)
    n_users = up.n_users

    def loss_on(users: torch.Tensor) -> torch.Tensor:
        diff, local, cov = up.select_users(users)
        return elbo(diff, local, cov, size=n_users) / up.diff.shape[0]

    loss_on(torch.arange(min(2, n_users)))
    opt = torch.optim.AdamW([p for p in elbo.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        for batch in torch.randperm(n_users, generator=gen).split(batch_users):
            opt.zero_grad()
            loss_on(batch).backward()
            opt.step()
    return guide.median()["heads"].detach().clone()
