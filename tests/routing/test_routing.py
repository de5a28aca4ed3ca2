"""Stage 2: Hedge (Algorithm 1), the weight posterior against brute force, HyRe as its limit, online regret,
the amortized router, active queries — on small populations with known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit, FitConfig
from bayesmicro.models.bt import bt_log_prob
from bayesmicro.routing.active import active_curve, expected_information_gain
from bayesmicro.routing.amortized import amortized_route
from bayesmicro.routing.common import budget_subset, context_router_from
from bayesmicro.routing.hedge import OnlineHedge, hedge_route
from bayesmicro.routing.posterior import (hyre_weights, laplace_heads, predict_with_posterior, weight_posterior)
from bayesmicro.routing.route import route_predict
from tests.common import assert_close


def _reversed_population(n=600, d=6, seed=0, prompt_dim=3, context_dim=3):
    """Two groups with reversed preferences (heads w, −w); the context says which group a pair comes from."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    w = 3.0 * w / w.norm()
    group = torch.arange(n) % 2
    code = torch.randn(context_dim, generator=g)
    context = (1 - 2 * group.float())[:, None] * code + 0.1 * torch.randn(n, context_dim, generator=g)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    sign = 1 - 2 * group.float()
    true_prob_a = torch.sigmoid(sign * ((a - b) @ w))
    wins = torch.rand(n, generator=g) < true_prob_a
    data = EmbeddedPairs(chosen=torch.where(wins[:, None], a, b), rejected=torch.where(wins[:, None], b, a),
                         prompt=torch.randn(n, prompt_dim, generator=g), context=context,
                         group=np.char.add("g", group.numpy().astype(str)),
                         split=np.where(np.arange(n) < n // 2, "train", "test"))
    true_prob = torch.sigmoid(sign * (data.diff() @ w))
    return data, torch.stack([w, -w]), true_prob


def _stage1(heads: torch.Tensor, prompt_dim=3, hidden=128, seed=0, router="prompt") -> Fit:
    """A stage-1 run with the given heads and a random (uninformative) prompt router."""
    torch.manual_seed(seed)
    config = FitConfig(k=heads.shape[-2], router=router, dim=heads.shape[-1], router_dim=prompt_dim if router !=
                       "none" else 0, hidden=hidden)
    state = config.build_model().router.state_dict()
    return Fit(config, heads if heads.ndim == 3 else heads[None], state)


def test_context_router_starts_at_the_stage1_prediction():
    data, heads, _ = _reversed_population()
    fit = _stage1(heads)
    router = context_router_from(fit, data)
    assert_close(router.log_weights(data.router_input(True), len(data)), fit.log_weights(data), atol=1e-5)


@pytest.mark.parametrize("method", ["hedge", "posterior", "hyre", "amortized"], ids=str)
def test_routing_recovers_reversed_subgroups(method):
    data, heads, true_prob = _reversed_population()
    fit = _stage1(heads)
    test = data.part("test")
    oracle = float(((true_prob[data.split == "test"] > 0.5) == (torch.ones(len(test)) > 0)).double().mean())
    before = float((fit.predict_proba(test) > 0.5).double().mean())
    labelled = budget_subset(data.part("train"), 50, seed=0)
    assert len(labelled) == 100
    after = float((route_predict(fit, labelled, test, method, seed=0) > 0.5).double().mean())
    assert before < oracle - 0.2
    assert after > oracle - {"hedge": 0.1}.get(method, 0.03)


def test_hedge_targets_follow_algorithm_1():
    """With τ → ∞ the targets equal f itself, so the cross-entropy gradient is that of f's entropy; with tiny τ they
    are one-hot on the lowest-loss head."""
    data, heads, _ = _reversed_population(n=64)
    fit = _stage1(heads)
    sharp = hedge_route(fit, data, tau=1e-4, epochs=1, lr=0.0)
    assert sharp.history[0]["cross_entropy"] == pytest.approx(
        float((-fit.log_weights(data).gather(1, (-bt_log_prob(fit.margins(data)[0])).argmin(1, keepdim=True))).mean()),
        rel=1e-4)


def test_quadrature_posterior_matches_brute_force_and_importance_sampling():
    data, heads, _ = _reversed_population(n=40)
    fit = _stage1(heads * 0.3)
    labelled = data.subset(np.arange(8))
    post = weight_posterior(fit, labelled, concentration=2.0, grid=4000)
    # brute force: Beta(1, 1)-prior midpoint rule on π_2
    p2 = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    margins = fit.margins(labelled)[0].double()
    lik = ((1 - p2)[:, None] * torch.sigmoid(margins[:, 0]) + p2[:, None] * torch.sigmoid(margins[:, 1])).prod(1)
    centre = fit.log_weights(labelled).double().exp().mean(0)
    prior = torch.distributions.Beta(2 * centre[1], 2 * centre[0]).log_prob(p2).exp()
    brute_mean = float((p2 * lik * prior).sum() / (lik * prior).sum())
    assert post.mean()[1].item() == pytest.approx(brute_mean, abs=1e-4)
    # three heads, two of them identical: importance sampling agrees with the K = 2 answer after merging
    fit3 = _stage1(torch.stack([heads[0], heads[1], heads[1]]) * 0.3, router="none")
    fit2 = _stage1(heads * 0.3, router="none")
    fit3._router.logits.data = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    is_post = weight_posterior(fit3, labelled, concentration=2.0, n_samples=40000, seed=1)
    q_post = weight_posterior(fit2, labelled, concentration=2.0)
    assert is_post.method == "importance" and is_post.ess > 1000
    assert is_post.mean()[0].item() == pytest.approx(q_post.mean()[0].item(), abs=0.01)


def test_hyre_is_the_small_concentration_limit():
    data, heads, _ = _reversed_population(n=40)
    fit = _stage1(heads * 0.3, router="none")
    labelled = data.subset(np.arange(6))
    hyre = hyre_weights(fit, labelled, torch.tensor([0.5, 0.5]))
    gaps = [float((weight_posterior(fit, labelled, concentration=c, grid=8000).mean() - hyre).abs().max())
            for c in (1.0, 0.1, 0.01, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] and gaps[3] < 1e-3


def test_interval_shrinks_with_labels_and_contains_the_mean():
    data, heads, _ = _reversed_population(n=200)
    fit = _stage1(heads)
    group0 = data.subset(np.flatnonzero(data.group == "g0"))
    widths = []
    for n in (2, 10, 50):
        post = weight_posterior(fit, group0.subset(np.arange(n)), concentration=1.0)
        pred = predict_with_posterior(fit, post, group0.subset(np.arange(50, 90)))
        assert bool((pred["low"] <= pred["mean"] + 1e-9).all() and (pred["mean"] <= pred["high"] + 1e-9).all())
        widths.append(float((pred["high"] - pred["low"]).mean()))
    assert widths[0] > widths[1] > widths[2]


def test_online_hedge_regret_is_at_most_log_k():
    data, heads, _ = _reversed_population(n=300)
    fit = _stage1(torch.stack([heads[0], heads[1], 0.5 * heads[0]]), router="none")
    online = OnlineHedge.from_fit(fit).partial_fit(data.diff())
    # brute force: the Bayes mixture's cumulative log loss is −log Σ_k (1/K) Π_t σ(Δ_tk)
    per_head = bt_log_prob(data.diff().double() @ fit.heads[0].double().T).sum(0)
    assert online.learner_loss == pytest.approx(-float(torch.logsumexp(per_head, 0) - math.log(3)), rel=1e-9)
    assert 0.0 <= online.regret <= math.log(3) + 1e-9


def test_amortized_router_gives_a_posterior_for_unseen_contexts():
    data, heads, true_prob = _reversed_population()
    fit = _stage1(heads)
    router = amortized_route(fit, budget_subset(data.part("train"), 50, seed=0))
    test = data.part("test")
    q = router.posterior(test)
    assert q.concentration.shape == (len(test), 2)
    means = router.mean_weights(test)
    group0 = torch.from_numpy(test.group == "g0")
    assert float(means[group0, 0].mean()) > 0.6 and float(means[~group0, 1].mean()) > 0.6
    pred = router.predict_interval(test)
    assert bool((pred["low"] <= pred["high"]).all())


def test_eig_prefers_informative_pairs_and_active_beats_random():
    data, heads, _ = _reversed_population(n=400)
    fit = _stage1(heads)
    group0 = data.subset(np.flatnonzero(data.group == "g0"))
    post = weight_posterior(fit, None, reference=group0, concentration=1.0)
    gain = expected_information_gain(fit, post, group0)
    margin = fit.margins(group0)[0, :, 0].abs()
    assert float(torch.corrcoef(torch.stack([gain.float(), margin]))[0, 1]) > 0.8
    pool, held = group0.subset(np.arange(100)), group0.subset(np.arange(100, 200))
    active = active_curve(fit, pool, held, [1, 2], strategy="eig")
    random = np.mean([active_curve(fit, pool, held, [2], strategy="random", seed=s)[2] for s in range(5)])
    assert active[1] >= random - 1e-9


def test_laplace_draws_are_centred_on_the_map_heads():
    data, heads, _ = _reversed_population(n=400)
    fit = _stage1(torch.stack([heads[0], heads[0].roll(1)]), router="none")
    drawn = laplace_heads(fit, data, n_draws=400, seed=0)
    assert drawn.heads.shape == (400, 2, 6)
    assert_close(drawn.heads.mean(0), fit.heads[0], atol=0.15)


def test_bad_inputs_are_named():
    data, heads, _ = _reversed_population(n=40)
    fit = _stage1(heads)
    with pytest.raises(BadInput, match="method must be one of"):
        route_predict(fit, data, data, "magic")
    with pytest.raises(BadInput, match="tau must be > 0"):
        hedge_route(fit, data, tau=0.0)
    no_context = EmbeddedPairs(chosen=data.chosen, rejected=data.rejected, prompt=data.prompt)
    with pytest.raises(BadInput, match="needs a 'context' feature matrix"):
        context_router_from(fit, no_context)


@pytest.mark.parametrize("method", ["hedge", "posterior", "hyre", "amortized"], ids=str)
def test_a_one_head_run_is_refused_by_every_method(method):
    data, heads, _ = _reversed_population(n=40)
    one_head = _stage1(heads[:1], router="none")
    with pytest.raises(BadInput, match=r"one head \(K = 1\).*needs K ≥ 2"):
        route_predict(one_head, data, data, method)


def test_online_posterior_matches_batch_and_has_small_regret():
    from bayesmicro.routing.posterior import OnlinePosterior

    data, heads, _ = _reversed_population(n=400)
    fit = _stage1(heads, router="none")
    group0 = data.subset(np.flatnonzero(data.group == "g0"))
    online = OnlinePosterior(fit, group0, concentration=1.0)
    for start in range(0, 100, 25):
        online.partial_fit(group0.subset(np.arange(start, start + 25)))
    batch = weight_posterior(fit, group0.subset(np.arange(100)), concentration=1.0)
    assert_close(online.post.mean(), batch.mean(), atol=1e-9)
    # Dirichlet(½, ½) mixture: regret against the best single head ≤ ½ log(T + 1) + log 2
    assert online.regret <= 0.5 * math.log(101) + math.log(2)
    assert online.learner_loss > 0
