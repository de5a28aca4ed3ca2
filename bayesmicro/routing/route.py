"""One entry point for stage 2: label B pairs per group, route, predict the held-out pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.result import Fit
from bayesmicro.models.bt import mixture_log_prob
from bayesmicro.routing.amortized import amortized_route
from bayesmicro.routing.choose import choose_restart
from bayesmicro.routing.hierarchical import UnitScales, adapt
from bayesmicro.routing.hedge import budget_subset, check_routable, hedge_route
from bayesmicro.routing.posterior import hyre_weights, predict_with_posterior, weight_posterior

METHODS = ("hierarchical", "hedge", "posterior", "amortized", "hyre")
WEIGHT_METHODS = METHODS[1:]  # methods that re-weight the heads: they need K ≥ 2 (and a context, for hedge/amortized)


def route_predict(fit: Fit, labelled: EmbeddedPairs, test: EmbeddedPairs, method: str, *, tau: float = 1e-3,
                  seed: int = 0, by: str = "group", concentration: float = 1.0,
                  mode: str = "static", restart: str = "kept", scales: UnitScales | None = None) -> torch.Tensor:
    """(n_test,) P(chosen ≻ rejected) for ``test`` after routing on the ``labelled`` pairs.

    ``restart="context"``: route the restart of ``fit.restart_modes`` whose router best separates the labelled
    pairs' ``by`` labels (``choose_restart``) instead of the one stage 1 kept.

    ``hierarchical`` (the default of ``bayesmicro route``): each ``by`` unit's offsets on the heads and the router
    logits, MAP under the empirical-Bayes prior sds ``scales`` (``routing.hierarchical.estimate_scales`` on the
    training pairs); a unit without labelled pairs is predicted by stage 1 exactly.
    ``hedge`` and ``amortized`` learn one router on [prompt; context] from all labelled pairs; ``posterior`` and
    ``hyre`` infer one weight vector per ``by`` label (group or user) from that label's labelled pairs (a label with
    none keeps the prior).
    """
    if method not in METHODS:
        raise BadInput(f"method must be one of {METHODS}, got {method!r}")
    if method == "hierarchical":
        if scales is None:
            raise BadInput("method 'hierarchical' needs the units' prior sds: scales=estimate_scales(fit, "
                           "training pairs, by)", argument="scales")
        return adapt(fit, labelled, scales, by).predict_proba(test)
    check_routable(fit)
    fit, _ = choose_restart(fit, labelled, by, restart)
    if method == "hedge":
        return hedge_route(fit, labelled, tau=tau, seed=seed).predict_proba(test)
    if method == "amortized":
        return amortized_route(fit, labelled, seed=seed).predict_proba(test)
    test_labels, labelled_labels = getattr(test, by), getattr(labelled, by)
    if test_labels is None or labelled_labels is None:
        raise BadInput(f"method {method!r} routes per {by}: every pair needs a '{by}' label", source=test.source)
    prob = torch.zeros(len(test), dtype=torch.float64)
    for label in sorted(set(test_labels.tolist())):
        rows = np.flatnonzero(test_labels == label)
        part = test.subset(rows)
        mine = np.flatnonzero(labelled_labels == label)
        own = labelled.subset(mine) if mine.size else None
        if method == "posterior":
            post = weight_posterior(fit, own, reference=part, concentration=concentration, mode=mode, seed=seed)
            prob[torch.from_numpy(rows)] = predict_with_posterior(fit, post, part)["mean"]
        else:
            prior = fit.log_weights(part if own is None else own).double().exp().mean(0)
            weights = prior if own is None else hyre_weights(fit, own, prior)
            margins = fit.margins(part).double()
            log_w = weights.log().expand(margins.shape[1], -1)
            prob[torch.from_numpy(rows)] = mixture_log_prob(log_w, margins).exp().mean(0)
    return prob.float()


def budget_curve(fit: Fit, data: EmbeddedPairs, methods: list[str], budgets: list[int], *, tau: float = 1e-3,
                 seed: int = 0, by: str = "group", score_fn=None,
                 select: Callable[[EmbeddedPairs, int], EmbeddedPairs] | None = None, restart: str = "kept",
                 scales: UnitScales | None = None) -> dict:
    """{method: {B: score}} on the test part, labelling ``B`` train pairs per ``by`` label: ``select(train, B)``
    (default: at random, ``budget_subset``; ``bayesmicro route --active`` passes active queries)."""
    train, test = data.part("train"), data.part("test")
    select = select or (lambda part, budget: budget_subset(part, budget, seed=seed, by=by))
    curves: dict = {}
    for method in methods:
        curves[method] = {}
        for budget in budgets:
            labelled = select(train, budget)
            prob = route_predict(fit, labelled, test, method, tau=tau, seed=seed, by=by, restart=restart,
                                 scales=scales)
            curves[method][str(budget)] = score_fn(prob, getattr(test, by))
    return curves
