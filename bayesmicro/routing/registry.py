"""The registry from ``methods.RouteMethod`` to the stage-2 router class (``routing.router``)."""

from __future__ import annotations

from bayesmicro.methods import RouteMethod
from bayesmicro.routing.router import (AmortizedRouting, HedgeRouting, HierarchicalRouting, HyReRouting,
                                       JointRouting, PosteriorRouting, Router)

ROUTE_METHODS: dict[RouteMethod, type[Router]] = {
    RouteMethod.HIERARCHICAL: HierarchicalRouting,
    RouteMethod.JOINT: JointRouting,
    RouteMethod.HEDGE: HedgeRouting,
    RouteMethod.POSTERIOR: PosteriorRouting,
    RouteMethod.AMORTIZED: AmortizedRouting,
    RouteMethod.HYRE: HyReRouting,
}


def router_for(method: str | RouteMethod, **options) -> Router:
    """The stage-2 router of ``method`` (a member or its string), with its options."""
    return ROUTE_METHODS[RouteMethod(method)](**options)


__all__ = ["ROUTE_METHODS", "router_for"]
