"""One entry point for stage 2: label B pairs per group, route, predict the held-out pairs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import RouteMethod
from bayesmicro.routing.common import budget_subset, check_routable
from bayesmicro.routing.hierarchical import UnitScales
from bayesmicro.routing.registry import ROUTE_METHODS, router_for

METHODS = tuple(member.value for member in ROUTE_METHODS)
# methods that re-weight the heads: they need K ≥ 2 (and a context, for hedge/amortized)
WEIGHT_METHODS = tuple(m.value for m, cls in ROUTE_METHODS.items() if cls.reweights_heads)


def route_predict(fit: Fit, labelled: EmbeddedPairs, test: EmbeddedPairs, method: str = RouteMethod.HIERARCHICAL, *,
                  tau: float = 1e-3, seed: int = 0, by: str = "group", concentration: float = 1.0,
                  mode: str = "static", restart: str = "kept", scales: UnitScales | None = None,
                  population: EmbeddedPairs | None = None) -> torch.Tensor:
    """(n_test,) P(chosen ≻ rejected) for ``test`` after routing on the ``labelled`` pairs.

    ``restart="context"``: route the restart of ``fit.restart_modes`` whose router best separates the labelled
    pairs' ``by`` labels (``choose_restart``) instead of the one stage 1 kept.

    ``hierarchical`` (the default of ``bayesmicro route``): each ``by`` unit's offsets on the heads and the router
    logits, MAP under the empirical-Bayes prior sds ``scales`` (``routing.hierarchical.estimate_scales`` on the
    training pairs); a unit without labelled pairs is predicted by stage 1 exactly. ``joint``: the same offsets with
    the population refitted together with them on ``population`` (the pairs stage 1 was fitted on, which hold the
    labelled ones): seen units, whose pairs were in stage 1's training data.
    ``hedge`` and ``amortized`` learn one router on [prompt; context] from all labelled pairs; ``posterior`` and
    ``hyre`` infer one weight vector per ``by`` label (group or user) from that label's labelled pairs (a label with
    none keeps the prior).
    """
    if method not in METHODS:
        raise BadInput(f"method must be one of {METHODS}, got {method!r}")
    return router_for(method, tau=tau, seed=seed, by=by, concentration=concentration, mode=mode, restart=restart,
                      scales=scales, population=population).predict(fit, labelled, test)


def budget_curve(fit: Fit, data: EmbeddedPairs, methods: list[str], budgets: list[int], *, tau: float = 1e-3,
                 seed: int = 0, by: str = "group", score_fn=None,
                 select: Callable[[EmbeddedPairs, int], EmbeddedPairs] | None = None, restart: str = "kept",
                 scales: UnitScales | None = None) -> dict:
    """{method: {B: score}} on the test part, labelling ``B`` train pairs per ``by`` label: ``select(train, B)``
    (default: at random, ``budget_subset``; ``bayesmicro route --active`` passes active queries). ``score_fn``
    (prob, labels) → the score (default ``bayesmicro.evaluate.metrics.score``, what ``bayesmicro route`` reports)."""
    if score_fn is None:
        from bayesmicro.evaluate.metrics import score as score_fn
    train, test = data.part("train"), data.part("test")
    select = select or (lambda part, budget: budget_subset(part, budget, seed=seed, by=by))
    curves: dict = {}
    for method in methods:
        curves[method] = {}
        for budget in budgets:
            labelled = select(train, budget)
            prob = route_predict(fit, labelled, test, method, tau=tau, seed=seed, by=by, restart=restart,
                                 scales=scales, population=train)
            curves[method][str(budget)] = score_fn(prob, getattr(test, by))
    return curves


__all__ = ["METHODS", "WEIGHT_METHODS", "budget_curve", "check_routable", "route_predict"]
