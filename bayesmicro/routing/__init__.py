"""Stage 2: Hedge routing (paper Algorithm 1), the Bayesian posterior over mixture weights, the amortized router,
online updates and active queries, and the choice among stage-1 restarts by the labelled pairs' contexts."""

from bayesmicro.routing.active import active_curve, expected_information_gain
from bayesmicro.routing.amortized import AmortizedRouter, amortized_route
from bayesmicro.routing.choose import choose_restart, context_information
from bayesmicro.routing.hedge import HedgeRouter, OnlineHedge, budget_subset, hedge_route
from bayesmicro.routing.posterior import (OnlinePosterior, WeightPosterior, hyre_weights, laplace_heads, predict_with_posterior,
                                          weight_posterior)
from bayesmicro.routing.route import budget_curve, route_predict

__all__ = ["AmortizedRouter", "HedgeRouter", "OnlineHedge", "OnlinePosterior", "WeightPosterior", "active_curve",
           "amortized_route", "budget_curve", "budget_subset", "choose_restart", "context_information",
           "expected_information_gain", "hedge_route", "hyre_weights", "laplace_heads", "predict_with_posterior",
           "route_predict", "weight_posterior"]
