"""Stage 2 as one interface: every RouteMethod has a Router class, and ``route_predict`` is ``Router.predict``."""

from __future__ import annotations

import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from bayesmicro.methods import RouteMethod
from bayesmicro.routing.common import budget_subset
from bayesmicro.routing.registry import ROUTE_METHODS, router_for
from bayesmicro.routing.route import METHODS, WEIGHT_METHODS, route_predict
from bayesmicro.routing.router import Router


def test_every_route_method_has_a_router_class():
    assert set(ROUTE_METHODS) == set(RouteMethod) and METHODS == tuple(RouteMethod)
    for method, cls in ROUTE_METHODS.items():
        assert issubclass(cls, Router) and cls.method == method
    assert set(WEIGHT_METHODS) == set(RouteMethod) - {RouteMethod.HIERARCHICAL, RouteMethod.JOINT}
    assert {m for m, cls in ROUTE_METHODS.items() if cls.uses_offsets} == {RouteMethod.HIERARCHICAL,
                                                                          RouteMethod.JOINT}
    assert {m for m, cls in ROUTE_METHODS.items() if cls.reads_context} == {RouteMethod.HEDGE, RouteMethod.AMORTIZED}


@pytest.fixture(scope="module")
def routed():
    data, _ = make_population(PopulationSpec(n_pairs=600, dim=4, prompt_dim=3, context_dim=3, k=2), seed=1)
    stage1 = fit(data, k=2, router="prompt", restarts=1)
    return stage1, budget_subset(data.part("train"), 10), data.part("test")


@pytest.mark.parametrize("method", ["hyre", "posterior", "hedge"])
def test_route_predict_is_the_routers_predict(routed, method):
    stage1, labelled, test = routed
    by_function = route_predict(stage1, labelled, test, method)
    by_class = router_for(method).adapt(stage1, labelled).predict_proba(test)
    assert torch.equal(by_function, by_class)


def test_unknown_method_and_missing_scales_are_bad_input(routed):
    stage1, labelled, test = routed
    with pytest.raises(BadInput, match="method must be one of"):
        route_predict(stage1, labelled, test, "nope")
    with pytest.raises(BadInput, match="needs the units' prior sds"):
        router_for("hierarchical").predict(stage1, labelled, test)


def test_joint_routing_is_fit_jointly_on_the_population_with_the_labelled_pairs_personal():
    from tests.routing.test_hierarchical import user_population
    from bayesmicro.routing.common import rows_of
    from bayesmicro.routing.hierarchical import UnitScales, fit_jointly

    pairs, _ = user_population(n_users=10, pairs_per_user=20, offset_sd=0.8, seed=4)
    train, test = pairs.with_split(0.25, 0).part("train"), pairs.with_split(0.25, 0).part("test")
    stage1 = fit(train, k=1)
    scales = UnitScales(head=0.8, logit=0.0)
    labelled = budget_subset(train, 5, by="user")
    personal = rows_of(train, labelled, "user")
    assert personal.sum() == len(labelled) == 50
    expected = fit_jointly(stage1, train, scales, "user", personal=personal).predict_proba(test)
    got = route_predict(stage1, labelled, test, "joint", by="user", scales=scales, population=train)
    assert torch.equal(got, expected)
    with pytest.raises(BadInput, match="method 'joint' refits the population"):
        route_predict(stage1, labelled, test, "joint", by="user", scales=scales)
    with pytest.raises(BadInput, match="labelled pair 0 is not one of the population's pairs"):
        route_predict(stage1, test, test, "joint", by="user", scales=scales, population=train)
