"""Active queries: which pair to ask a new user (or context) about next.

Three acquisitions, all computed on the weighted points (π_m, head draw s_m) of the current weight posterior, with
p_j(m) = P(y_j = 1 | π_m, heads_m) = Σ_k w_jk(π_m) σ(Δ_jk):

- ``eig``: the expected information gain about π of labelling pair j, the mutual information between y_j and π:

      EIG_j = H(E_m[p_j]) − E_m[H(p_j)]

- ``epig``: the expected *predictive* information gain (Bhatt et al. 2023, "Prediction-oriented Bayesian active
  learning"): the mutual information between y_j and the label y*_t of a target pair t, averaged over the targets
  (by default the user's own candidate pairs: only their features, never their labels):

      EPIG_j = mean_t Σ_{a,b ∈ {0,1}} p(y_j = a, y*_t = b) log p(y_j = a, y*_t = b) / (p(y_j = a) p(y*_t = b)),
      p(y_j = 1, y*_t = 1) = E_m[p_j p_t]

  It values a query by how much it settles the predictions the user will be served, not by how much it settles π
  in directions that never change a prediction.
- ``eer``: the expected accuracy of the Bayes predictions on the targets after the answer (expected error
  reduction), mean_t Σ_a max_b p(y_j = a, y*_t = b); EPIG breaks its frequent exact ties.

All are symmetric in which response is called chosen, so none peeks at the label. Queries are greedy and
sequential: after each answer the posterior is recomputed with every label so far, so later picks account for the
pairs already asked. ``select_queries`` returns the order of picks from a pool (each prefix is the query set of
that budget); ``active_curve`` scores held-out pairs after each step; ``active_subset`` picks B pairs per group/user
of a labelled table (the table's orientation plays the user's answers) for ``bayesmicro route --active``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.methods import Acquisition
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import mixture_log_prob
from bayesmicro.routing.posterior import WeightPosterior, pair_log_weights, predict_with_posterior, weight_posterior

STRATEGIES = tuple(member.value for member in Acquisition)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def _support(post: WeightPosterior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The posterior points that carry mass: π (M, K), head draw (M,), normalised weight (M,)."""
    keep = post.weight > 1e-12 * post.weight.max()
    weight = post.weight[keep]
    return post.pi[keep], post.draw[keep], weight / weight.sum()


@torch.no_grad()
def point_probs(fit: Fit, post: WeightPosterior, pairs: EmbeddedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (M,), probs (M, n)): P(chosen ≻ rejected) of every pair at every posterior point with mass."""
    pi, draw, weight = _support(post)
    margins = fit.margins(pairs).double()  # (S, n, K)
    router_log_w = fit.log_weights(pairs).double()
    return weight, mixture_log_prob(pair_log_weights(pi, router_log_w, post.mode), margins[draw]).exp()


@torch.no_grad()
def expected_information_gain(fit: Fit, post: WeightPosterior, candidates: EmbeddedPairs) -> torch.Tensor:
    """(m,) EIG about π (in nats) of labelling each candidate pair."""
    weight, probs = point_probs(fit, post, candidates)
    return _binary_entropy(weight @ probs) - weight @ _binary_entropy(probs)


def _mutual_information(weight: torch.Tensor, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(m, T) I(y_j; y*_t) of two binary labels that are independent given the point: weight (M,), probs (M, m),
    target (M, T)."""
    p11, pj, pt = _joint(weight, probs, target)
    joint = torch.stack([p11, pj - p11, pt - p11, 1 - pj - pt + p11]).clamp_min(1e-300)  # (4, m, T)
    marg = torch.stack([pj * pt, pj * (1 - pt), (1 - pj) * pt, (1 - pj) * (1 - pt)]).clamp_min(1e-300)
    return (joint * (joint.log() - marg.log())).sum(0).clamp_min(0.0)


@torch.no_grad()
def expected_predictive_information_gain(fit: Fit, post: WeightPosterior, candidates: EmbeddedPairs,
                                         targets: EmbeddedPairs) -> torch.Tensor:
    """(m,) EPIG (nats): mean over the ``targets`` (T pairs) of the mutual information between a candidate's label
    and the target's label under the current posterior."""
    weight, probs = point_probs(fit, post, candidates)
    _, target = point_probs(fit, post, targets)
    return _mutual_information(weight, probs, target).mean(1)


def _joint(weight: torch.Tensor, probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """p(y_j = 1, y*_t = 1) (m, T), p(y_j = 1) (m, 1), p(y*_t = 1) (1, T) under the posterior points."""
    return (weight[:, None] * probs).T @ target, (weight @ probs)[:, None], (weight @ target)[None, :]


@torch.no_grad()
def expected_accuracy(fit: Fit, post: WeightPosterior, candidates: EmbeddedPairs,
                      targets: EmbeddedPairs) -> torch.Tensor:
    """(m,) the expected accuracy of the Bayes predictions on the ``targets`` after the candidate's answer
    (expected error reduction, Roy & McCallum 2001): mean_t Σ_a max_b p(y_j = a, y*_t = b)."""
    weight, probs = point_probs(fit, post, candidates)
    _, target = point_probs(fit, post, targets)
    p11, pj, pt = _joint(weight, probs, target)
    return (torch.maximum(p11, pj - p11) + torch.maximum(pt - p11, 1 - pj - pt + p11)).mean(1)


def _check(strategy: str, budget: int, pool: EmbeddedPairs) -> None:
    if strategy not in STRATEGIES:
        raise BadInput(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if budget < 1:
        raise BadInput(f"budget must be ≥ 1, got {budget}")
    if budget > len(pool):
        raise BadInput(f"the pool has {len(pool)} pairs, fewer than the largest budget {budget}")


def _next_pick(fit: Fit, post: WeightPosterior, pool: EmbeddedPairs, remaining: list[int], strategy: str,
               targets: EmbeddedPairs, rng: np.random.Generator) -> int:
    """The pool index of the next query."""
    return ACQUISITIONS[Acquisition(strategy)](fit, post, pool, remaining, targets, rng)


def _pick_random(fit, post, pool, remaining, targets, rng) -> int:
    return remaining[int(rng.integers(len(remaining)))]


def _pick_eig(fit, post, pool, remaining, targets, rng) -> int:
    return remaining[int(expected_information_gain(fit, post, pool.subset(remaining)).argmax())]


def _pick_epig(fit, post, pool, remaining, targets, rng) -> int:
    return remaining[int(expected_predictive_information_gain(fit, post, pool.subset(remaining), targets).argmax())]


def _pick_eer(fit, post, pool, remaining, targets, rng) -> int:
    """Expected accuracy first; EPIG breaks its (frequent) exact ties."""
    candidates = pool.subset(remaining)
    gain = expected_predictive_information_gain(fit, post, candidates, targets)
    accuracy = expected_accuracy(fit, post, candidates, targets)
    gain = torch.where(accuracy >= accuracy.max() - 1e-9, gain, gain.new_tensor(-1.0))
    return remaining[int(gain.argmax())]


# the registry: Acquisition → the rule that picks the next query
ACQUISITIONS = {Acquisition.EER: _pick_eer, Acquisition.EPIG: _pick_epig, Acquisition.EIG: _pick_eig,
                Acquisition.RANDOM: _pick_random}


def select_queries(fit: Fit, pool: EmbeddedPairs, budget: int, *, strategy: str = "epig",
                   targets: EmbeddedPairs | None = None, concentration: float = 1.0, mode: str = "static",
                   seed: int = 0, on_step: Callable[[int, WeightPosterior], None] | None = None) -> list[int]:
    """Ask ``budget`` pairs of one user's ``pool`` one at a time; returns the pool indices in the order asked.

    The pool's chosen/rejected orientation is the user's answer, revealed after each pick. ``targets``: the pairs
    whose predictions EPIG cares about (default: the pool). ``on_step(n, posterior)`` sees the posterior after n
    answers.
    """
    _check(strategy, budget, pool)
    targets = pool if targets is None else targets
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    remaining = list(range(len(pool)))
    post = weight_posterior(fit, None, reference=pool, concentration=concentration, mode=mode, seed=seed)
    for n in range(1, budget + 1):
        pick = _next_pick(fit, post, pool, remaining, strategy, targets, rng)
        chosen.append(pick)
        remaining.remove(pick)
        post = weight_posterior(fit, pool.subset(chosen), concentration=concentration, mode=mode, seed=seed)
        if on_step is not None:
            on_step(n, post)
    return chosen


def active_curve(fit: Fit, pool: EmbeddedPairs, held_out: EmbeddedPairs, budgets: list[int], *,
                 strategy: str = "eig", concentration: float = 1.0, mode: str = "static", seed: int = 0,
                 metric: Callable[[torch.Tensor], float] | None = None,
                 targets: EmbeddedPairs | None = None) -> dict[int, float]:
    """Label up to max(budgets) pool pairs of one user one at a time; {n: metric of held-out predictions} at each
    budget n (default metric: accuracy). The pool's chosen/rejected orientation is the user's true label."""
    metric = metric or (lambda prob: float((prob > 0.5).double().mean()))
    out: dict[int, float] = {}

    def record(n: int, post: WeightPosterior) -> None:
        if n in budgets:
            out[n] = metric(predict_with_posterior(fit, post, held_out)["mean"])

    _check(strategy, max(budgets), pool)
    select_queries(fit, pool, max(budgets), strategy=strategy, targets=targets, concentration=concentration,
                   mode=mode, seed=seed, on_step=record)
    return out


def active_orders(fit: Fit, data: EmbeddedPairs, budget: int, *, by: str = "group", strategy: str = "epig",
                  pool_size: int = 200, concentration: float = 1.0, mode: str = "static",
                  seed: int = 0) -> dict[str, np.ndarray]:
    """{label: rows of ``data`` in the order asked}: ``budget`` active queries for every ``by`` label, from a
    candidate pool of at most ``pool_size`` random pairs of that label (a label with ≤ ``budget`` pairs keeps them
    all). The table's chosen/rejected orientation plays the answers; a prefix of an order is the query set of a
    smaller budget."""
    labels = getattr(data, by)
    if labels is None:
        raise BadInput(f"a per-{by} budget needs a '{by}' label for every pair", source=data.source)
    if budget < 1:
        raise BadInput(f"budget must be ≥ 1, got {budget}")
    if pool_size < 1:
        raise BadInput(f"pool_size must be ≥ 1, got {pool_size}")
    rng = np.random.default_rng(seed)
    orders = {}
    for label in sorted(set(labels.tolist())):
        rows = rng.permutation(np.flatnonzero(labels == label))[:max(pool_size, budget)]
        if len(rows) > budget:
            rows = rows[select_queries(fit, data.subset(rows), budget, strategy=strategy,
                                       concentration=concentration, mode=mode, seed=seed)]
        orders[label] = rows
    return orders


def active_subset(fit: Fit, data: EmbeddedPairs, budget: int, *, by: str = "group", strategy: str = "epig",
                  pool_size: int = 200, concentration: float = 1.0, mode: str = "static",
                  seed: int = 0) -> EmbeddedPairs:
    """At most ``budget`` pairs of every ``by`` label of ``data``, asked actively (see ``active_orders``): the
    counterpart of ``common.budget_subset`` for ``bayesmicro route --active``."""
    orders = active_orders(fit, data, budget, by=by, strategy=strategy, pool_size=pool_size,
                           concentration=concentration, mode=mode, seed=seed)
    return prefix_subset(data, orders, budget)


def prefix_subset(data: EmbeddedPairs, orders: dict[str, np.ndarray], budget: int) -> EmbeddedPairs:
    """The first ``budget`` rows of every label's order, in table order."""
    return data.subset(np.sort(np.concatenate([rows[:budget] for rows in orders.values()])))
