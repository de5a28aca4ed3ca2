"""Stage 2 as published (MiCRo, Algorithm 1): context-aware routing by Hedge-style targets, heads frozen.

A router f on [prompt; context] starts from the stage-1 router (prompt columns of the first layer copied, context
columns zero, so f(x, c) = stage-1 π(x) at the start). Each epoch the targets are recomputed once,

    ω_ik ∝ f(x_i, c_i)_k · exp(−L_ik / τ),   L_ik = −log σ(Δ_ik),

and f is trained on the cross-entropy −Σ_k ω_ik log f(x_i, c_i)_k in minibatches of 32 for 10 epochs. τ: 1e-3
(HelpSteer2), 1e-4 (RPR). ``OnlineHedge`` is the online form: exponential weights over the heads, one labelled pair at
a time, with cumulative log-loss regret against the best single head in hindsight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import bt_log_prob, mixture_log_prob
from bayesmicro.models.mixture import Router
from bayesmicro.routing.common import check_routable, context_router_from, head_losses


@dataclass
class HedgeRouter:
    """A context-aware router f(x, c) on frozen heads; ``predict_proba`` like ``Fit``'s."""

    fit: Fit
    router: Router
    history: list[dict] = field(default_factory=list)

    @torch.no_grad()
    def log_weights(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n, K) log f(x, c)."""
        return self.router.log_weights(data.router_input(True), len(data))

    @torch.no_grad()
    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) P(chosen ≻ rejected) = mean over head draws of Σ_k f_k σ(Δ_k)."""
        return mixture_log_prob(self.log_weights(data), self.fit.margins(data)).exp().mean(0)


def hedge_route(fit: Fit, labelled: EmbeddedPairs, *, tau: float = 1e-3, epochs: int = 10, batch_size: int = 32,
                lr: float = 1e-3, seed: int = 0, hidden: int | None = None) -> HedgeRouter:
    """Paper Algorithm 1 on the ``labelled`` pairs (e.g. ``budget_subset(train, B)``); heads stay frozen."""
    if tau <= 0:
        raise BadInput(f"tau must be > 0, got {tau}")
    check_routable(fit)
    fit.check_compatible(labelled)
    router = context_router_from(fit, labelled, hidden)
    x = labelled.router_input(True)
    losses = head_losses(fit, labelled)  # (n, K), fixed: the heads are frozen
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(router.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        with torch.no_grad():  # targets recomputed once per epoch
            targets = torch.softmax(router.log_weights(x, len(x)) - losses / tau, -1)
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = -(targets[idx] * router.log_weights(x[idx], len(idx))).sum(-1).mean()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "cross_entropy": total / len(x)})
    router.eval()
    return HedgeRouter(fit, router, history)


class OnlineHedge:
    """Exponential weights over K frozen heads, one labelled pair at a time: w_k ∝ w_k · exp(−η ℓ_k).

    With η = 1 the prediction Σ_k w_k σ(Δ_k) is the Bayesian mixture and the cumulative log-loss regret against the
    best single head in hindsight is at most log K (log loss is 1-mixable).
    """

    def __init__(self, margins_fn, k: int, eta: float = 1.0, prior: torch.Tensor | None = None):
        self.margins_fn, self.eta = margins_fn, eta
        self.log_w = torch.log(prior) if prior is not None else torch.full((k,), -math.log(k), dtype=torch.float64)
        self.learner_loss = 0.0
        self.head_loss = torch.zeros(k, dtype=torch.float64)
        self.n = 0

    @classmethod
    def from_fit(cls, fit: Fit, eta: float = 1.0) -> "OnlineHedge":
        """Heads = the posterior-mean heads of ``fit``."""
        heads = fit.heads.mean(0).double()
        return cls(lambda diff: diff.double() @ heads.T, fit.config.k, eta)

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.log_w, -1)

    def predict_proba(self, diff: torch.Tensor) -> torch.Tensor:
        """(n,) P(chosen ≻ rejected) under the current weights. diff: (n, d)."""
        margins = self.margins_fn(diff)
        return mixture_log_prob(torch.log_softmax(self.log_w, -1).expand_as(margins), margins).exp()

    def partial_fit(self, diff: torch.Tensor) -> "OnlineHedge":
        """Observe labelled pairs (rows of ``diff``, chosen − rejected) one at a time, in order."""
        for row in diff.reshape(-1, diff.shape[-1]):
            margins = self.margins_fn(row[None])[0]  # (K,)
            pair_loss = -bt_log_prob(margins)
            self.learner_loss += float(-mixture_log_prob(torch.log_softmax(self.log_w, -1), margins))
            self.head_loss += pair_loss
            self.log_w = torch.log_softmax(self.log_w - self.eta * pair_loss, -1)
            self.n += 1
        return self

    @property
    def regret(self) -> float:
        """Cumulative log loss minus that of the best single head in hindsight."""
        return self.learner_loss - float(self.head_loss.min())
