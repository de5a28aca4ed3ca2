"""Active queries: which pair to ask a new user (or context) about next.

The expected information gain about π of asking pair j is the mutual information between its label y_j and π under
the current posterior:

    EIG_j = H(E_π[p_j(π)]) − E_π[H(p_j(π))],   p_j(π) = P(y_j = 1 | π) = Σ_k w_jk(π) σ(Δ_jk)

(binary entropies; symmetric in which response is called chosen, so it never peeks at the label). ``active_curve``
labels pairs one at a time from a pool — by maximal EIG or at random — and scores held-out pairs after each step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.result import Fit
from bayesmicro.models.bt import mixture_log_prob
from bayesmicro.routing.posterior import WeightPosterior, pair_log_weights, predict_with_posterior, weight_posterior

STRATEGIES = ("eig", "random")


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@torch.no_grad()
def expected_information_gain(fit: Fit, post: WeightPosterior, candidates: EmbeddedPairs) -> torch.Tensor:
    """(m,) EIG about π (in nats) of labelling each candidate pair."""
    keep = post.weight > 1e-12 * post.weight.max()
    pi, draw, weight = post.pi[keep], post.draw[keep], post.weight[keep]
    weight = weight / weight.sum()
    margins = fit.margins(candidates).double()
    router_log_w = fit.log_weights(candidates).double()
    probs = mixture_log_prob(pair_log_weights(pi, router_log_w, post.mode), margins[draw]).exp()  # (M, m)
    return _binary_entropy(weight @ probs) - weight @ _binary_entropy(probs)


def active_curve(fit: Fit, pool: EmbeddedPairs, held_out: EmbeddedPairs, budgets: list[int], *,
                 strategy: str = "eig", concentration: float = 1.0, mode: str = "static", seed: int = 0,
                 metric: Callable[[torch.Tensor], float] | None = None) -> dict[int, float]:
    """Label up to max(budgets) pool pairs of one user one at a time; {n: metric of held-out predictions} at each
    budget n (default metric: accuracy). The pool's chosen/rejected orientation is the user's true label."""
    if strategy not in STRATEGIES:
        raise BadInput(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if max(budgets) > len(pool):
        raise BadInput(f"the pool has {len(pool)} pairs, fewer than the largest budget {max(budgets)}")
    metric = metric or (lambda prob: float((prob > 0.5).double().mean()))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    remaining = list(range(len(pool)))
    out: dict[int, float] = {}
    post = weight_posterior(fit, None, reference=pool, concentration=concentration, mode=mode, seed=seed)
    for n in range(1, max(budgets) + 1):
        if strategy == "random":
            pick = remaining[int(rng.integers(len(remaining)))]
        else:
            gain = expected_information_gain(fit, post, pool.subset(remaining))
            pick = remaining[int(gain.argmax())]
        chosen.append(pick)
        remaining.remove(pick)
        post = weight_posterior(fit, pool.subset(chosen), concentration=concentration, mode=mode, seed=seed)
        if n in budgets:
            out[n] = metric(predict_with_posterior(fit, post, held_out)["mean"])
    return out
