"""The Bayesian posterior over a new context's (or user's) mixture weights π, given n labelled pairs.

    π ~ Dirichlet(κ · m),    P(chosen_i ≻ rejected_i | π, heads) = Σ_k w_ik(π) σ(Δ_ik)

Two ways the weights enter (``mode``):

- ``static``: w_ik = π_k — one weight vector for all of the context's pairs; m = the stage-1 router's mean
  prediction over the context's pairs (the prior is centred on the router).
- ``tilt``: w_i = normalise(f(x_i) ⊙ π) — π tilts the stage-1 router's per-prompt prediction f(x_i); m = uniform,
  so the prior is centred on the router's own prediction (π = uniform leaves f unchanged).

The likelihood is a product of mixtures, so the posterior is computed numerically and "exactly" up to Monte Carlo
error: for K = 2 by quadrature on an even grid of logit π_2 (``grid`` nodes in all, split over the head draws), otherwise by self-normalised
importance sampling from the prior (with a defensive moment-matched Dirichlet second stage when the effective sample
size is low). Every π point is paired with the heads' posterior draws (``Fit.heads`` (S, K, d)), so uncertainty about
the heads is integrated over. The effective sample size is reported. ``hyre_weights`` (weights ∝ exp(−loss) of each
head on the labelled pairs, HyRe) is the κ → 0 limit of the static posterior mean under a uniform centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.methods import WeightMode
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import bt_log_prob, mixture_log_prob, reward_margins

MODES = tuple(member.value for member in WeightMode)
LOGIT_RANGE = 25.0  # quadrature nodes span π_2 ∈ [σ(−25), σ(25)]


@dataclass
class WeightPosterior:
    """Weighted points (π_m, head draw s_m) with normalised log-weights. ``pi`` (M, K), ``draw`` (M,), ``log_weight``
    (M,); ``ess`` the effective sample size (Σw)²/Σw²; ``method`` quadrature | importance."""

    pi: torch.Tensor
    draw: torch.Tensor
    log_weight: torch.Tensor
    ess: float
    method: str
    mode: str
    n_labels: int

    @property
    def weight(self) -> torch.Tensor:
        return self.log_weight.exp()

    def mean(self) -> torch.Tensor:
        """(K,) posterior mean of π."""
        return self.weight @ self.pi

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed credible interval for each π_k: (low (K,), high (K,))."""
        return weighted_quantiles(self.pi, self.weight, level)

    def summary(self, level: float = 0.9) -> dict:
        low, high = self.interval(level)
        return {"mean": self.mean().tolist(), "low": low.tolist(), "high": high.tolist(), "level": level,
                "ess": self.ess, "method": self.method, "mode": self.mode, "n_labels": self.n_labels}


def weighted_quantiles(values: torch.Tensor, weight: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-tailed weighted quantiles of every column: values (M, n), weight (M,) summing to 1 → (n,), (n,)."""
    order = values.argsort(0)
    cdf = weight[order].cumsum(0)  # (M, n)
    tail = (1.0 - level) / 2

    def at(q: float) -> torch.Tensor:
        idx = torch.searchsorted(cdf.T.contiguous(), torch.full((values.shape[1], 1), q, dtype=cdf.dtype)).squeeze(1)
        idx = idx.clamp_max(values.shape[0] - 1)
        return values.gather(0, order.gather(0, idx[None]))[0]

    return at(tail), at(1.0 - tail)


def pair_log_weights(pi: torch.Tensor, router_log_w: torch.Tensor, mode: str) -> torch.Tensor:
    """(M, n, K) log w_ik(π_m): π (M, K), router_log_w (n, K) the stage-1 log f(x_i)."""
    log_pi = pi.clamp_min(1e-300).log()
    if mode == WeightMode.STATIC:
        return log_pi[:, None, :].expand(-1, router_log_w.shape[0], -1)
    return torch.log_softmax(log_pi[:, None, :] + router_log_w[None], -1)


def prior_centre(fit: Fit, pairs: EmbeddedPairs, mode: str) -> torch.Tensor:
    """(K,) the Dirichlet prior's mean m."""
    k = fit.config.k
    if mode == WeightMode.TILT:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    return fit.log_weights(pairs).double().exp().mean(0)


def weight_posterior(
    fit: Fit,
    labelled: EmbeddedPairs | None,
    *,
    reference: EmbeddedPairs | None = None,
    concentration: float = 2.0,
    mode: str = "static",
    n_samples: int = 20000,
    grid: int = 2000,
    seed: int = 0,
) -> WeightPosterior:
    """p(π | the ``labelled`` pairs of one context); ``labelled=None`` (or empty) gives the prior.

    ``reference``: pairs of the same context that set the static prior centre when there are no labels.
    """
    if mode not in MODES:
        raise BadInput(f"mode must be one of {MODES}, got {mode!r}")
    if concentration <= 0:
        raise BadInput(f"concentration must be > 0, got {concentration}")
    k = fit.config.k
    centre_on = labelled if labelled is not None else reference
    if centre_on is None:
        raise BadInput("weight_posterior needs labelled pairs or reference pairs of the context")
    alpha = concentration * prior_centre(fit, centre_on, mode)
    gen = torch.Generator().manual_seed(seed)
    s = fit.n_draws
    if labelled is not None:
        margins = fit.margins(labelled).double()  # (S, n, K)
        router_log_w = fit.log_weights(labelled).double()
    n_labels = 0 if labelled is None else len(labelled)

    def log_lik(pi: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        if n_labels == 0:
            return torch.zeros(pi.shape[0], dtype=torch.float64)
        out = torch.empty(pi.shape[0], dtype=torch.float64)
        for start in range(0, pi.shape[0], 4096):  # bounded memory: (chunk, n, K)
            sl = slice(start, start + 4096)
            out[sl] = mixture_log_prob(pair_log_weights(pi[sl], router_log_w, mode), margins[draw[sl]]).sum(-1)
        return out

    if k == 1:
        pi = torch.ones(s, 1, dtype=torch.float64)
        draw = torch.arange(s)
        log_w = torch.log_softmax(log_lik(pi, draw), 0)
        return WeightPosterior(pi, draw, log_w, _ess(log_w), "quadrature", mode, n_labels)
    if k == 2:  # quadrature in logit(π_2): fine resolution near the simplex edges, where posteriors pile up
        points = max(200, grid // s)
        # a Beta(a, b) prior with small a, b keeps much of its mass beyond logit ±25: widen so that ≤ e^-6 is outside
        span = max(LOGIT_RANGE, 6.0 / float(alpha.min()))
        t = torch.linspace(-span, span, points, dtype=torch.float64)
        p1 = torch.sigmoid(t)
        pi = torch.stack([1 - p1, p1], 1).repeat(s, 1)
        draw = torch.arange(s).repeat_interleave(points)
        # Beta(α_2, α_1) density of π_2 times the Jacobian π_2(1 − π_2), in logs that never underflow
        log_prior = alpha[1] * F.logsigmoid(t) + alpha[0] * F.logsigmoid(-t)
        log_w = torch.log_softmax(log_prior.repeat(s) + log_lik(pi, draw), 0)
        return WeightPosterior(pi, draw, log_w, _ess(log_w), "quadrature", mode, n_labels)
    prior = torch.distributions.Dirichlet(alpha)
    pi = _sample(prior, n_samples, gen)
    draw = torch.randint(0, s, (n_samples,), generator=gen)
    log_w = torch.log_softmax(log_lik(pi, draw), 0)
    ess = _ess(log_w)
    if ess < n_samples / 20:  # defensive second stage: half prior, half a Dirichlet matched to the first stage
        mean = log_w.exp() @ pi
        var = log_w.exp() @ (pi - mean).pow(2)
        precision = float(((mean * (1 - mean)) / var.clamp_min(1e-12) - 1).clamp_min(1.0).median())
        fitted = torch.distributions.Dirichlet((precision * mean).clamp_min(1e-3))
        half = n_samples // 2
        pi = torch.cat([_sample(prior, half, gen), _sample(fitted, n_samples - half, gen)])
        draw = torch.randint(0, s, (n_samples,), generator=gen)
        log_q = torch.logaddexp(prior.log_prob(pi), fitted.log_prob(pi)) - math.log(2)
        log_w = torch.log_softmax(prior.log_prob(pi) - log_q + log_lik(pi, draw), 0)
        ess = _ess(log_w)
    return WeightPosterior(pi, draw, log_w, ess, "importance", mode, n_labels)


def _sample(dist: torch.distributions.Dirichlet, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, K) Dirichlet draws, reproducible from ``gen`` (torch's Dirichlet sampler only reads the global RNG)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    try:
        pi = dist.sample((n,))
    finally:
        torch.random.set_rng_state(state)
    return pi.clamp_min(1e-300) / pi.clamp_min(1e-300).sum(-1, keepdim=True)


def _ess(log_w: torch.Tensor) -> float:
    return float(torch.exp(-torch.logsumexp(2 * log_w, 0)))


@torch.no_grad()
def predict_with_posterior(fit: Fit, post: WeightPosterior, pairs: EmbeddedPairs,
                           level: float = 0.9) -> dict[str, torch.Tensor]:
    """Posterior mean and equal-tailed credible interval of P(chosen ≻ rejected) for each of ``pairs``:
    {"mean", "low", "high"} each (n,)."""
    margins = fit.margins(pairs).double()  # (S, n, K)
    router_log_w = fit.log_weights(pairs).double()
    keep = post.weight > 1e-12 * post.weight.max()  # drop points that carry no posterior mass
    pi, draw, weight = post.pi[keep], post.draw[keep], post.weight[keep]
    weight = weight / weight.sum()
    probs = torch.empty(pi.shape[0], len(pairs), dtype=torch.float64)
    for start in range(0, pi.shape[0], 2048):
        sl = slice(start, start + 2048)
        probs[sl] = mixture_log_prob(pair_log_weights(pi[sl], router_log_w, post.mode), margins[draw[sl]]).exp()
    low, high = weighted_quantiles(probs, weight, level)
    return {"mean": weight @ probs, "low": low, "high": high}


@torch.no_grad()
def hyre_weights(fit: Fit, labelled: EmbeddedPairs, prior: torch.Tensor | None = None) -> torch.Tensor:
    """HyRe: (K,) weights ∝ prior_k · exp(−Σ_i L_ik), L_ik = −log σ(Δ_ik) on the labelled pairs (heads averaged over
    draws in probability). The κ → 0 limit of the static posterior: all labels come from one head."""
    log_lik = bt_log_prob(fit.margins(labelled).double()).sum(1)  # (S, K)
    log_lik = torch.logsumexp(log_lik, 0) - math.log(log_lik.shape[0])
    log_prior = torch.zeros_like(log_lik) if prior is None else prior.double().log()
    return torch.softmax(log_prior + log_lik, -1)


def laplace_heads(fit: Fit, train: EmbeddedPairs, n_draws: int = 200, seed: int = 0) -> Fit:
    """A ``Fit`` whose heads are ``n_draws`` draws from a Laplace approximation of the heads' posterior around a
    MAP run (router held fixed): N(ŵ, H⁻¹), H the Hessian of −log p(heads | train pairs) at ŵ. For MAP runs, so
    that the weight posterior can integrate over head uncertainty."""
    from bayesmicro.infer.results.mixture import Fit as _Fit

    heads = fit.heads.mean(0).double()
    diff = train.diff().double()
    log_w = fit.log_weights(train).double()
    prior_var = fit.config.prior_scale ** 2

    def neg_log_post(flat: torch.Tensor) -> torch.Tensor:
        w = flat.reshape(heads.shape)
        return -mixture_log_prob(log_w, diff @ w.T).sum() + 0.5 * flat.pow(2).sum() / prior_var

    hess = torch.autograd.functional.hessian(neg_log_post, heads.reshape(-1))
    # a flat direction (e.g. label switching) gets at most the prior's spread
    evals, evecs = torch.linalg.eigh(0.5 * (hess + hess.T))
    chol = evecs * evals.clamp_min(1.0 / prior_var).rsqrt()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_draws, hess.shape[0], generator=gen, dtype=hess.dtype)
    draws = (heads.reshape(-1) + noise @ chol.T).reshape(n_draws, *heads.shape).float()
    return _Fit(fit.config, draws, fit.router_state, {**fit.summary, "head_draws": f"laplace ({n_draws})"})


class OnlinePosterior:
    """The weight posterior updated one labelled pair at a time (exact Bayes on the fixed quadrature / importance
    points): predict with the current posterior, record the log loss, then multiply in the pair's likelihood.
    ``regret``: cumulative log loss minus that of the best single head in hindsight (heads = posterior mean)."""

    def __init__(self, fit: Fit, reference: EmbeddedPairs, *, concentration: float = 1.0, mode: str = "static",
                 grid: int = 2000, seed: int = 0):
        self.fit = fit
        self.post = weight_posterior(fit, None, reference=reference, concentration=concentration, mode=mode,
                                     grid=grid, seed=seed)
        self.learner_loss = 0.0
        self.head_loss = torch.zeros(fit.config.k, dtype=torch.float64)
        self.n = 0

    @torch.no_grad()
    def partial_fit(self, pairs: EmbeddedPairs) -> "OnlinePosterior":
        """Observe the rows of ``pairs`` (chosen ≻ rejected) in order."""
        margins = self.fit.margins(pairs).double()  # (S, n, K)
        router_log_w = self.fit.log_weights(pairs).double()
        post = self.post
        pair_ll = mixture_log_prob(pair_log_weights(post.pi, router_log_w, post.mode), margins[post.draw])  # (M, n)
        mean_head_ll = bt_log_prob(reward_margins(self.fit.heads.mean(0).double(), pairs.diff().double()))  # (n, K)
        log_w = post.log_weight
        for i in range(len(pairs)):
            self.learner_loss -= float(torch.logsumexp(log_w + pair_ll[:, i], 0))
            log_w = torch.log_softmax(log_w + pair_ll[:, i], 0)
            self.head_loss -= mean_head_ll[i]
            self.n += 1
        self.post = WeightPosterior(post.pi, post.draw, log_w, _ess(log_w), post.method, post.mode,
                                    post.n_labels + len(pairs))
        return self

    @property
    def regret(self) -> float:
        return self.learner_loss - float(self.head_loss.min())
