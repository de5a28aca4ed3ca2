"""Active queries: EPIG / expected accuracy against brute force and information inequalities, greedy selection,
per-group active subsets, and ``bayesmicro route --active``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.errors import BadInput
from bayesmicro.routing.active import (_mutual_information, active_curve, active_orders, active_subset,
                                       expected_accuracy, expected_information_gain,
                                       expected_predictive_information_gain, point_probs, select_queries)
from bayesmicro.routing.posterior import weight_posterior
from tests.common import assert_close
from tests.routing.test_routing import _reversed_population, _stage1


def _group0(n=400, k3=False):
    data, heads, _ = _reversed_population(n=n)
    if k3:  # a third head: the posterior is importance-sampled, not on the K = 2 grid
        heads = torch.cat([heads, heads[:1].roll(2, dims=1)])
    fit = _stage1(heads, router="none")
    return fit, data.subset(np.flatnonzero(data.group == "g0"))


def test_mutual_information_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    weight = torch.softmax(torch.randn(7, generator=gen, dtype=torch.float64), 0)
    probs, target = torch.rand(7, 3, generator=gen, dtype=torch.float64), torch.rand(7, 2, generator=gen,
                                                                                       dtype=torch.float64)
    got = _mutual_information(weight, probs, target)
    for j in range(3):
        for t in range(2):
            joint = torch.zeros(2, 2, dtype=torch.float64)
            for a in (0, 1):
                for b in (0, 1):
                    pa = probs[:, j] if a else 1 - probs[:, j]
                    pb = target[:, t] if b else 1 - target[:, t]
                    joint[a, b] = (weight * pa * pb).sum()
            outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
            assert_close(got[j, t], (joint * (joint / outer).log()).sum(), atol=1e-12)


@pytest.mark.parametrize("k3", [False, True], ids=["k2_grid", "k3_importance"])
def test_epig_is_bounded_by_eig_and_expected_accuracy_never_drops(k3):
    fit, pool = _group0(k3=k3)
    post = weight_posterior(fit, pool.subset(np.arange(3)), concentration=1.0)
    candidates, targets = pool.subset(np.arange(3, 60)), pool.subset(np.arange(60, 120))
    eig = expected_information_gain(fit, post, candidates)
    epig = expected_predictive_information_gain(fit, post, candidates, targets)
    assert bool((epig >= 0).all()) and bool((epig <= eig + 1e-9).all())  # y_j ⊥ y*_t | π: data processing
    weight, target = point_probs(fit, post, targets)
    now = torch.maximum(weight @ target, 1 - weight @ target).mean()
    after = expected_accuracy(fit, post, candidates, targets)
    # an answer never lowers the expected accuracy; it may leave it flat when no single answer flips a decision
    # (every candidate here on torch 2.11), while the information about y* is still positive
    assert bool((after >= now - 1e-12).all()) and float(epig.max()) > 1e-6


@pytest.mark.parametrize("strategy", ["epig", "eer", "eig"])
def test_greedy_queries_are_distinct_prefixes_and_beat_random(strategy):
    fit, pool = _group0()
    asked = select_queries(fit, pool.subset(np.arange(80)), 6, strategy=strategy)
    assert len(set(asked)) == 6 and asked[:3] == select_queries(fit, pool.subset(np.arange(80)), 3,
                                                                strategy=strategy)
    held = pool.subset(np.arange(100, 200))
    active = active_curve(fit, pool.subset(np.arange(80)), held, [1, 2], strategy=strategy)
    random = np.mean([active_curve(fit, pool.subset(np.arange(80)), held, [2], strategy="random", seed=s)[2]
                      for s in range(5)])
    assert active[1] >= random - 1e-9


def test_active_subset_gives_every_group_its_budget():
    data, heads, _ = _reversed_population(n=200)
    fit = _stage1(heads)
    picked = active_subset(fit, data, 4, by="group", pool_size=30)
    assert sorted(np.unique(picked.group, return_counts=True)[1].tolist()) == [4, 4]
    orders = active_orders(fit, data, 4, by="group", pool_size=3)  # a pool smaller than the budget: all of it
    assert [len(v) for v in orders.values()] == [4, 4]
    with pytest.raises(BadInput, match="pool_size must be ≥ 1"):
        active_subset(fit, data, 4, pool_size=0)
    with pytest.raises(BadInput, match="strategy must be one of"):
        select_queries(fit, data, 2, strategy="magic")


def test_route_cli_active_posterior(tmp_path):
    data, heads, _ = _reversed_population(n=400)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    args = ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), "--method", "posterior", "--budget", "3",
            "--budgets", "1,3", "--json"]
    result = CliRunner().invoke(app, [*args, "--active"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["selection"] == {"kind": "active", "acquisition": "epig", "pool_size": 200}
    assert report["n_labelled"] == 6 and set(report["budget_curve"]["posterior"]) == {"1", "3"}
    assert report["after"]["posterior"]["accuracy"] > report["before"]["accuracy"] + 0.2
    plain = json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1])
    assert plain["selection"] == {"kind": "random"} and set(plain) == set(report)
    bad = CliRunner().invoke(app, [*args, "--active", "--acquisition", "random"])
    assert bad.exit_code == 2 and "--acquisition must be one of" in bad.output
