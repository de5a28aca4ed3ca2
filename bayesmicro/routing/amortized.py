"""The router as amortized posterior inference: an inference network q(π | x, c) trained with the ELBO.

Model (heads fixed at their posterior mean, one latent weight vector per labelled pair):

    π_i ~ Dirichlet(κ · f(x_i)),      P(chosen_i ≻ rejected_i | π_i) = Σ_k π_ik σ(Δ_ik)

with f the stage-1 router (the prior is centred on its prediction). Guide: q(π_i | x_i, c_i) = Dirichlet(α(x_i, c_i)),
α = exp(ρ)·softmax(g(x, c)) with g a router on [prompt; context] initialised like Hedge's from the stage-1 router. Trained in Pyro (``Trace_ELBO()(model,
guide)`` as a torch loss, Adam, minibatches of pairs). A context never seen in training gets its posterior over
weights in one forward pass; because the likelihood is linear in π, P(chosen ≻ rejected) under q is exactly
Σ_k E_q[π_k] σ(Δ_k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import mixture_log_prob, reward_margins
from bayesmicro.routing.common import context_router_from
from bayesmicro.routing.posterior import weighted_quantiles


class WeightModel(PyroModule):
    """π_i ~ Dirichlet(κ f(x_i)); the component summed out given π_i."""

    def __init__(self, concentration: float):
        super().__init__()
        self.concentration = concentration

    def forward(self, margins: torch.Tensor, prior_log_w: torch.Tensor, features: torch.Tensor,
                size: int | None = None) -> None:
        """margins (B, K) of the fixed heads; prior_log_w (B, K) stage-1 log f(x); features unused (guide input)."""
        n = margins.shape[0]
        with pyro.plate("pairs", size or n, subsample=torch.arange(n)):
            pi = pyro.sample("pi", dist.Dirichlet(self.concentration * prior_log_w.exp()))
            pyro.factor("obs", mixture_log_prob(pi.clamp_min(1e-30).log(), margins))


class WeightEncoder(PyroModule):
    """q(π_i | x_i, c_i) = Dirichlet(exp(ρ) · softmax(g(x_i, c_i))): g a router on [prompt; context] started from
    the stage-1 router (so q starts at the prior's mean), ρ a learned log-precision started at log κ."""

    def __init__(self, router: nn.Module, log_precision: float):
        super().__init__()
        self.router = router
        self.log_precision = nn.Parameter(torch.tensor(float(log_precision)))

    def concentration(self, features: torch.Tensor) -> torch.Tensor:
        """(n, K) Dirichlet parameters."""
        return self.log_precision.exp() * self.router.log_weights(features, features.shape[0]).exp() + 1e-4

    def forward(self, margins: torch.Tensor, prior_log_w: torch.Tensor, features: torch.Tensor,
                size: int | None = None) -> None:
        n = margins.shape[0]
        with pyro.plate("pairs", size or n, subsample=torch.arange(n)):
            pyro.sample("pi", dist.Dirichlet(self.concentration(features)))


@dataclass
class AmortizedRouter:
    """A trained inference network on frozen heads."""

    fit: Fit
    encoder: WeightEncoder
    history: list[float] = field(default_factory=list)

    @torch.no_grad()
    def posterior(self, pairs: EmbeddedPairs) -> torch.distributions.Dirichlet:
        """q(π_i | x_i, c_i) for every pair: a batch of n Dirichlets over K weights."""
        return torch.distributions.Dirichlet(self.encoder.concentration(pairs.router_input(True)))

    @torch.no_grad()
    def mean_weights(self, pairs: EmbeddedPairs) -> torch.Tensor:
        """(n, K) E_q[π_i]."""
        return self.posterior(pairs).mean

    @torch.no_grad()
    def predict_proba(self, pairs: EmbeddedPairs) -> torch.Tensor:
        """(n,) Σ_k E_q[π_ik] σ(Δ_ik) with the posterior-mean heads (exact: the likelihood is linear in π)."""
        return mixture_log_prob(self.mean_weights(pairs).log(), _margins(self.fit, pairs)).exp()

    @torch.no_grad()
    def predict_interval(self, pairs: EmbeddedPairs, level: float = 0.9, n_samples: int = 2000,
                         seed: int = 0) -> dict[str, torch.Tensor]:
        """Mean and equal-tailed interval of P(chosen ≻ rejected) under q: {"mean", "low", "high"} each (n,)."""
        pyro.set_rng_seed(seed)
        pi = self.posterior(pairs).sample((n_samples,))  # (M, n, K)
        probs = mixture_log_prob(pi.clamp_min(1e-30).log(), _margins(self.fit, pairs)).exp()  # (M, n)
        low, high = weighted_quantiles(probs, torch.full((n_samples,), 1.0 / n_samples), level)
        return {"mean": self.predict_proba(pairs), "low": low, "high": high}


def _margins(fit: Fit, pairs: EmbeddedPairs) -> torch.Tensor:
    """(n, K) margins of the posterior-mean heads."""
    return reward_margins(fit.heads.mean(0), pairs.diff())


def amortized_route(fit: Fit, labelled: EmbeddedPairs, *, concentration: float = 0.3, hidden: int | None = None,
                    epochs: int = 30, batch_size: int = 32, lr: float = 1e-3, particles: int = 16, q_precision: float = 100.0,
                    seed: int = 0) -> AmortizedRouter:
    """Train q(π | x, c) by the ELBO on context-labelled pairs with the heads fixed."""
    fit.check_compatible(labelled)
    if labelled.context is None:
        raise BadInput("the amortized router reads [prompt; context], and these pairs have no 'context' matrix",
                       source=labelled.source)
    if concentration <= 0:
        raise BadInput(f"concentration must be > 0, got {concentration}")
    pyro.set_rng_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    features = labelled.router_input(True)
    margins = _margins(fit, labelled)
    prior_log_w = fit.log_weights(labelled)
    model = WeightModel(concentration)
    guide = WeightEncoder(context_router_from(fit, labelled, hidden), math.log(q_precision))
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)(model, guide)
    n = len(labelled)
    elbo(margins[:1], prior_log_w[:1], features[:1], size=n)
    opt = torch.optim.AdamW(guide.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            opt.zero_grad()
            loss = elbo(margins[idx], prior_log_w[idx], features[idx], size=n) / n
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx) / n
        history.append(total)
    return AmortizedRouter(fit, guide, history)
