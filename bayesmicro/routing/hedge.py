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

import numpy as np
import torch
from torch import nn

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.result import Fit
from bayesmicro.models.bt import bt_log_prob, mixture_log_prob
from bayesmicro.models.mixture import LABEL_ROUTERS, Router


def check_routable(fit: Fit, source: str | None = None) -> None:
    """Stage 2 re-weights the run's heads: a one-head run has nothing to re-weight."""
    if fit.config.k < 2:
        raise BadInput("the run has one head (K = 1): stage-2 routing re-weights heads and needs K ≥ 2 "
                       "(fit with --k 2 or more)", source=source)


def budget_subset(data: EmbeddedPairs, budget: int, seed: int = 0, by: str = "group") -> EmbeddedPairs:
    """At most ``budget`` random pairs of every ``group`` (or ``user``) of ``data``: the labelled pairs of stage 2."""
    labels = getattr(data, by)
    if labels is None:
        raise BadInput(f"a per-{by} budget needs a '{by}' label for every pair", source=data.source)
    if budget < 1:
        raise BadInput(f"budget must be ≥ 1, got {budget}")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == g))[:budget] for g in sorted(set(labels.tolist()))]
    return data.subset(np.sort(np.concatenate(keep)))


def head_losses(fit: Fit, data: EmbeddedPairs) -> torch.Tensor:
    """(n, K) L_ik = −log σ(Δ_ik), averaged over the heads' posterior draws."""
    return -bt_log_prob(fit.margins(data)).mean(0)


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


def context_router_from(fit: Fit, data: EmbeddedPairs, hidden: int | None = None) -> Router:
    """A router on [prompt; context] whose output equals the stage-1 router's at the start.

    Stage-1 ``prompt`` router: first layer's prompt columns and the output layer copied, context columns zero
    (``user`` / ``group`` router: its columns are the context's, which must be that label's one-hot).
    Stage-1 ``none`` router (static weights): a fresh net whose output bias holds the static logits. Stage-1
    ``context`` router: copied whole.
    """
    if data.context is None:
        raise BadInput("context-aware routing needs a 'context' feature matrix, and these pairs have none",
                       source=data.source)
    k, d_p, d_c = fit.config.k, data.prompt_dim, data.context_dim
    stage1 = fit._router
    hidden = hidden or fit.config.hidden
    router = Router("context", k, d_p + d_c, hidden)
    x = data.router_input(True)
    router.standardize_from(x)
    with torch.no_grad():
        if k == 1:
            return router
        if stage1.kind == "context":
            router.load_state_dict(stage1.state_dict())
            return router
        first, last = router.net[0], router.net[2]
        if stage1.kind in ("prompt", *LABEL_ROUTERS):
            # a label router read the one-hot context stage 2 is given (``Fit.with_label_context``)
            cols = slice(0, d_p) if stage1.kind == "prompt" else slice(d_p, d_p + d_c)
            reads = "prompt" if stage1.kind == "prompt" else f"'{stage1.kind}' one-hot"
            if stage1.input_mean.shape[0] != cols.stop - cols.start:
                raise BadInput(f"stage-1 router reads {stage1.input_mean.shape[0]} {reads} features, the pairs have "
                               f"{cols.stop - cols.start}", source=data.source)
            s_first, s_last = stage1.net[0], stage1.net[2]
            router.net[0] = first = nn.Linear(d_p + d_c, s_first.out_features)
            router.net[2] = last = nn.Linear(s_first.out_features, k)
            first.weight.zero_()
            first.weight[:, cols] = s_first.weight
            first.bias.copy_(s_first.bias)
            last.load_state_dict(s_last.state_dict())
            router.input_mean[cols] = stage1.input_mean
            router.input_scale[cols] = stage1.input_scale
        else:  # static stage-1 weights
            last.weight.zero_()
            last.bias.copy_(torch.log_softmax(stage1.logits, -1))
    return router


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
