"""Stage 2, one interface (``routing.router.Router``; ``routing.registry`` maps each method to its class): Hedge
routing (paper Algorithm 1), the Bayesian posterior over mixture weights, the amortized router, HyRe and the
hierarchical offsets; online updates and active queries, and the choice among stage-1 restarts by the labelled
pairs' contexts; the helpers they share in ``routing.common``."""

from bayesmicro.routing.active import active_curve, expected_information_gain
from bayesmicro.routing.amortized import AmortizedRouter, amortized_route
from bayesmicro.routing.choose import choose_restart, context_information
from bayesmicro.routing.common import budget_subset
from bayesmicro.routing.hedge import HedgeRouter, OnlineHedge, hedge_route
from bayesmicro.routing.posterior import (OnlinePosterior, WeightPosterior, hyre_weights, laplace_heads, predict_with_posterior,
                                          weight_posterior)
from bayesmicro.routing.registry import ROUTE_METHODS, router_for
from bayesmicro.routing.route import budget_curve, route_predict
from bayesmicro.routing.router import Router

__all__ = ["ROUTE_METHODS", "Router", "router_for", "AmortizedRouter", "HedgeRouter", "OnlineHedge", "OnlinePosterior", "WeightPosterior", "active_curve",
           "amortized_route", "budget_curve", "budget_subset", "choose_restart", "context_information",
           "expected_information_gain", "hedge_route", "hyre_weights", "laplace_heads", "predict_with_posterior",
           "route_predict", "weight_posterior"]
