import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.arviz import to_inference_data
from bayesmicro.evaluate.loo import loo, mixture_is_loo, reloo
from bayesmicro.evaluate.selection import (ROUTER_PRIOR_SCALES, auto_k, auto_router_prior_scale, compare,
                                           head_correlation, holdout_compare, merge_correlated_heads)
from bayesmicro.infer import Fit, fit
from bayesmicro.infer.vi import VISchedule
from tests.common import assert_close

FAST_VI = VISchedule(guide="normal", steps=300, particles=1, draws=200)


@pytest.fixture(scope="module")
def population():
    return make_population(PopulationSpec(n_pairs=600, dim=4, prompt_dim=2, context_dim=2, k=2), seed=0)


@pytest.fixture(scope="module")
def vi_fits(population):
    data, _ = population
    return {k: fit(data, k=k, router="none", inference="vi", alpha=0.0, restarts=1, vi=FAST_VI) for k in (1, 2)}


def test_inference_data_holds_the_summed_out_log_likelihood(population, vi_fits):
    data, _ = population
    idata = to_inference_data(vi_fits[2], data)
    assert tuple(idata.posterior["heads"].shape) == (1, 200, 2, 4)
    assert_close(np.asarray(idata.log_likelihood["obs"])[0], vi_fits[2].pointwise_log_lik(data), atol=1e-6)
    assert np.asarray(idata.observed_data["obs"]).shape == (len(data),)


def test_loo_agrees_with_plain_importance_sampling(population, vi_fits):
    data, _ = population
    result = loo(vi_fits[2], data)
    ll = vi_fits[2].pointwise_log_lik(data).double()
    # IS-LOO: p(y_i | y_-i) ≈ 1 / mean_s (1 / p_s(y_i)); PSIS only smooths the largest weights.
    is_loo = float((-(torch.logsumexp(-ll, 0) - math.log(ll.shape[0]))).sum())
    assert result["elpd_loo"] == pytest.approx(is_loo, abs=0.5)
    lppd = float((torch.logsumexp(ll, 0) - math.log(ll.shape[0])).sum())
    assert result["p_loo"] == pytest.approx(lppd - result["elpd_loo"], abs=1e-6)
    assert result["pareto_k"]["bad"] == 0
    assert sum(result["pareto_k"][key] for key in ("good", "ok", "bad")) == len(data)


def test_reloo_scores_the_worst_pairs_by_refitting_without_them():
    # a few dozen training pairs: leaving one out moves the posterior enough to see in its elpd
    data, _ = make_population(PopulationSpec(n_pairs=50, dim=4, prompt_dim=2, context_dim=2, k=1), seed=3)
    with pytest.raises(ValueError, match="training part"):
        reloo(fit(data, k=1, router="none", inference="vi", restarts=1, vi=FAST_VI), data)
    data = data.part("train")
    full = fit(data, k=1, router="none", inference="vi", alpha=0.0, restarts=1, vi=FAST_VI)
    psis = loo(full, data)

    def refit(pairs):
        return fit(pairs, k=1, router="none", inference="vi", alpha=0.0, restarts=1, vi=FAST_VI)

    result = reloo(full, data, refit, threshold=-1.0, max_refits=2)  # every k is above -1: refit the two worst
    refitted = result["reloo"]["refitted"]
    ll = full.pointwise_log_lik(data).double()
    in_sample = torch.logsumexp(ll, 0) - math.log(ll.shape[0])
    assert [r["pair"] for r in refitted] == np.argsort([-r for r in _pareto_k(full, data)])[:2].tolist()
    assert result["reloo"]["unreliable"] == len(data) - 2
    for row in refitted:
        i = row["pair"]
        alone = refit(data.subset(np.delete(np.arange(len(data)), i))).pointwise_log_lik(data.subset([i])).double()
        alone = alone[:, 0]
        assert row["elpd_exact"] == pytest.approx(float(torch.logsumexp(alone, 0) - math.log(alone.numel())),
                                                  abs=1e-6)
        assert row["elpd_exact"] < float(in_sample[i])  # left out, the pair is predicted worse
        assert row["elpd_exact"] == pytest.approx(row["elpd_psis"], abs=0.25)  # same scale as PSIS (k < 0.5 here)
    shift = sum(r["elpd_exact"] - r["elpd_psis"] for r in refitted)
    assert result["elpd_loo"] == pytest.approx(psis["elpd_loo"] + shift, abs=1e-6)
    assert result["p_loo"] == pytest.approx(float(in_sample.sum()) - result["elpd_loo"], abs=1e-6)
    assert result["pareto_k"] == psis["pareto_k"]  # the PSIS diagnostics stay reported
    assert "redraw" not in result  # SVI draws: nothing cheap to redraw from
    assert reloo(full, data, refit)["reloo"] == {"threshold": 0.7, "refitted": [],
                                                 "unreliable": psis["pareto_k"]["bad"]}


def test_flagged_pairs_of_a_gaussian_posterior_get_psis_on_more_draws_of_it():
    from bayesmicro.evaluate.loo import _loo_result
    from bayesmicro.infer.api import refit_like

    data, _ = make_population(PopulationSpec(n_pairs=150, dim=4, prompt_dim=2, context_dim=2, k=2), seed=6)
    data = data.part("train")
    full = fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=8,
               vi=VISchedule(laplace_draws=300, mc_draws=16, router_posterior="linearised"))
    assert full.linearised_router

    def no_refit(pairs):
        raise AssertionError("max_refits=0: nothing is refitted")

    flagged = np.flatnonzero(np.asarray(_pareto_k(full, data)) > 0.3)
    assert 0 < len(flagged) < len(data)
    result = reloo(full, data, no_refit, threshold=0.3, max_refits=0, redraw_factor=3)
    denser = refit_like(full, data, draws=900)  # the same posterior (its MAP replayed exactly), 3× the draws
    assert denser.n_draws == 900 and all(torch.equal(denser.router_state[key], value)
                                         for key, value in full.router_state.items())
    _, dense_elpd, dense_k = _loo_result(to_inference_data(denser, data))
    _, elpd, _ = _loo_result(to_inference_data(full, data))
    redraw = result["redraw"]
    assert redraw["draws"] == 900 and [row["pair"] for row in redraw["pairs"]] == flagged.tolist()
    for row in redraw["pairs"]:
        i = row["pair"]
        assert row["pareto_k_redrawn"] == pytest.approx(dense_k[i], abs=1e-9)
        assert row["elpd_redrawn"] == pytest.approx(dense_elpd[i], abs=1e-9)
        assert row["elpd_psis"] == pytest.approx(elpd[i], abs=1e-9)
    assert redraw["still_above"] == int((dense_k[flagged] > 0.3).sum())
    assert result["reloo"] == {"threshold": 0.3, "refitted": [], "unreliable": redraw["still_above"]}
    expected = elpd.copy()
    expected[flagged] = dense_elpd[flagged]
    assert result["elpd_loo"] == pytest.approx(float(expected.sum()), abs=1e-6)
    assert result["pareto_k"] == loo(full, data)["pareto_k"]  # the counts at the run's own draws stay reported
    assert "redraw" not in reloo(full, data, no_refit, threshold=0.3, max_refits=0, redraw_factor=1)


def test_mixture_is_loo_recovers_the_exact_loo_predictive_of_a_conjugate_normal_model():
    """y_i ~ N(μ, 1), μ ~ N(0, 1), one outlier. q_mix(μ) ∝ p(μ | y) Σ_i 1 / p(y_i | μ) is the mixture of the
    leave-one-out posteriors N(m₋ᵢ, 1/P) weighted ∝ 1 / p(y_i | y₋ᵢ): drawn exactly, the estimator must return the
    closed-form log p(y_i | y₋ᵢ) = log N(y_i; m₋ᵢ, 1 + 1/P)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.cat([torch.randn(19, generator=gen, dtype=torch.float64), torch.tensor([6.0], dtype=torch.float64)])
    n, precision = len(y), 1.0 + (len(y) - 1)
    loo_mean = (y.sum() - y) / precision
    exact = torch.distributions.Normal(loo_mean, (1 + 1 / precision) ** 0.5).log_prob(y)
    component = torch.multinomial(torch.softmax(-exact, 0), 40_000, replacement=True, generator=gen)
    mu = loo_mean[component] + torch.randn(40_000, generator=gen, dtype=torch.float64) / precision**0.5
    log_lik = torch.distributions.Normal(mu[:, None], 1.0).log_prob(y)  # (S, n)
    elpd, log_v = mixture_is_loo(log_lik)
    assert elpd.shape == (n,) and log_v.shape == (40_000, n) and float(log_v.max()) <= 0  # weights v ≤ 1
    assert_close(elpd, exact, atol=0.03)
    assert float(elpd[-1]) < -10  # the outlier, recovered as well as the rest


def test_flagged_pairs_of_a_refined_run_get_mixture_importance_sampling():
    from bayesmicro.evaluate.loo import _loo_result
    from bayesmicro.infer.api import refit_like
    from bayesmicro.infer.vi.refine import RefineSchedule

    data, _ = make_population(PopulationSpec(n_pairs=150, dim=4, prompt_dim=2, context_dim=2, k=2), seed=6)
    data = data.part("train")
    full = fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=8,
               vi=VISchedule(mc_draws=16, router_posterior="refined",
                             refine=RefineSchedule(chains=8, draws=80, warmup=5, leapfrog=5)))

    def no_refit(pairs):
        raise AssertionError("max_refits=0: nothing is refitted")

    _, elpd, pareto_k = _loo_result(to_inference_data(full, data))
    flagged = np.flatnonzero(pareto_k > 0.3)
    assert 0 < len(flagged) < len(data)
    result = reloo(full, data, no_refit, threshold=0.3, max_refits=0, redraw_factor=2)
    assert "redraw" not in result
    mixed = refit_like(full, data, draws=160, refine_target="loo_mixture")  # the run's chains, on q_mix, replayed
    assert mixed.summary["vi"]["refine"]["target"] == "loo_mixture"
    mix_elpd, log_v = mixture_is_loo(mixed.pointwise_log_lik(data))
    mixture = result["mixture_is"]
    assert mixture["draws"] == 160 and [row["pair"] for row in mixture["pairs"]] == flagged.tolist()
    assert mixture["elpd_loo_mixture"] == pytest.approx(float(mix_elpd.sum()), abs=1e-6)
    for row in mixture["pairs"]:
        i = row["pair"]
        assert row["elpd_mixture"] == pytest.approx(float(mix_elpd[i]), abs=1e-6)
        assert row["elpd_psis"] == pytest.approx(elpd[i], abs=1e-9)
    weights_k = np.asarray([row["pareto_k_mixture"] for row in mixture["pairs"]])
    assert mixture["still_above"] == int((weights_k > 0.3).sum())
    assert result["reloo"] == {"threshold": 0.3, "refitted": [], "unreliable": mixture["still_above"]}
    expected = elpd.copy()
    expected[flagged] = mix_elpd.numpy()[flagged]
    assert result["elpd_loo"] == pytest.approx(float(expected.sum()), abs=1e-6)
    assert "mixture_is" not in reloo(full, data, no_refit, threshold=0.3, max_refits=0, redraw_factor=1)


@pytest.mark.parametrize("inference, router", [("vi", "none"), ("vi", "context"), ("em", "context")],
                         ids=["vi-static", "vi-laplace", "em-laplace"])
def test_refit_like_repeats_a_run_from_its_recorded_settings(inference, router):
    from bayesmicro.infer.api import refit_like

    data, _ = make_population(PopulationSpec(n_pairs=80, dim=4, prompt_dim=2, context_dim=2, k=2), seed=4)
    original = fit(data, k=2, router=router, inference=inference, alpha=0.0, restarts=2, seed=5, hidden=8,
                   router_prior_scale=0.5, vi=VISchedule(guide="normal", draws=50, laplace_draws=50, steps=600,
                                                         router_posterior="linearised"))
    again = refit_like(original, data)
    assert again.config == original.config and again.n_draws == original.n_draws
    assert_close(again.pointwise_log_lik(data), original.pointwise_log_lik(data), atol=1e-5)


def _pareto_k(fitted, data):
    from bayesmicro.evaluate.loo import _loo_result

    return _loo_result(to_inference_data(fitted, data))[2].tolist()


def test_compare_ranks_the_true_mixture_above_a_single_head(population, vi_fits):
    data, _ = population
    table = compare({"k=1": vi_fits[1], "k=2": vi_fits[2]}, data)
    assert table["k=2"]["rank"] == 0 and table["k=2"]["elpd_diff"] == 0.0
    assert table["k=1"]["elpd_diff"] > 0 and table["k=2"]["weight"] > table["k=1"]["weight"]
    ho = holdout_compare({"k=1": vi_fits[1], "k=2": vi_fits[2]}, data)
    assert ho["k=2"]["elpd_diff"] == 0.0 and ho["k=1"]["elpd_diff"] > 0


def test_loo_needs_draws(population):
    data, _ = population
    with pytest.raises(ValueError, match="posterior draws"):
        loo(fit(data, k=1, router="none"), data)


def test_merging_duplicated_heads_keeps_predictions(population, vi_fits):
    data, _ = population
    base = vi_fits[2]
    heads = torch.cat([base.heads, base.heads[:, :1] * 1.01], dim=1)  # head 2 duplicates head 0
    config = type(base.config)(**{**base.config.__dict__, "k": 3})
    logits = torch.tensor([0.2, 0.5, -0.1])
    tripled = Fit(config, heads, {"logits": logits})
    corr = head_correlation(tripled, data)
    assert corr[0, 2] > 0.99 and corr[0, 1] < 0.9
    groups, merged = merge_correlated_heads(tripled, data, threshold=0.95)
    assert groups == [[0, 2], [1]]
    assert_close(merged.heads[:, 0], merged.heads[:, 2], atol=0)
    assert_close(merged.predict_proba(data), tripled.predict_proba(data), atol=2e-3)


@pytest.mark.parametrize("true_k, n_pairs, k_max", [
    (1, 1000, 3),
    (3, 1500, 4),
    (5, 2000, 6),
], ids=["k1", "k3", "k5"])
def test_auto_k_picks_the_true_number_of_heads(true_k, n_pairs, k_max):
    data, _ = make_population(PopulationSpec(n_pairs=n_pairs, dim=6, k=true_k, test_fraction=0.3), seed=0)
    k, info = auto_k(data, k_max=k_max, restarts=1, hidden=32)
    assert k == true_k, info["compare"]
    assert set(info["compare"]) == {f"k={j}" for j in range(1, k_max + 1)}


def test_smallest_adequate_k_rule():
    from bayesmicro.evaluate.selection import smallest_adequate_k

    table = {"k=1": {"elpd_diff": 30.0, "dse": 6.0}, "k=2": {"elpd_diff": 3.5, "dse": 0.5},
             "k=3": {"elpd_diff": 0.0, "dse": 0.0}}
    assert smallest_adequate_k(table, [1, 2, 3]) == 2  # a 3.5-nat gain is small
    table["k=2"] = {"elpd_diff": 9.0, "dse": 10.0}
    assert smallest_adequate_k(table, [1, 2, 3]) == 2  # within its standard error
    table["k=2"] = {"elpd_diff": 9.0, "dse": 3.0}
    assert smallest_adequate_k(table, [1, 2, 3]) == 3


class _ArviZ1:
    """What ArviZ 1.x's ``compare`` / ``loo`` return (``elpd`` not ``elpd_loo``, ``p`` not ``p_loo``, ``elpd_diff``
    negated, a table rounded unless ``round_to="none"``), to check the adapter without installing 1.x (it needs
    Python ≥ 3.12; CI runs 0.23)."""

    __version__ = "1.3.0"

    def __init__(self, elpds: dict[str, float]):
        self.elpds, self.calls = elpds, []

    def compare(self, idatas, **options):
        import pandas as pd

        self.calls.append(options)
        assert "ic" not in options  # 1.x has no ``ic``
        best = max(self.elpds.values())
        rows = {name: {"rank": 0, "elpd_diff": self.elpds[name] - best, "dse": 0.5, "p": 2.0,
                       "elpd": self.elpds[name], "se": 1.0, "weight": float(self.elpds[name] == best)}
                for name in idatas}
        table = pd.DataFrame.from_dict(rows, orient="index").sort_values("elpd", ascending=False)
        table["rank"] = range(len(table))
        return table if options.get("round_to") == "none" else table.round(0)

    def loo(self, idata, pointwise=True):
        from types import SimpleNamespace

        return SimpleNamespace(elpd=-12.25, se=0.5, p=1.5, pareto_k=np.array([0.1, 0.6, 0.8]))


def test_arviz_1_tables_are_read_in_the_0x_convention(monkeypatch):
    from bayesmicro.evaluate import arviz as adapter
    from bayesmicro.evaluate import loo as psis
    from bayesmicro.evaluate import selection

    fake = _ArviZ1({"k=1": -120.4, "k=2": -100.3, "k=3": -101.2})
    monkeypatch.setattr(adapter, "_az", lambda: fake)
    table = selection.compare_table({"k=1": None, "k=2": None, "k=3": None})
    assert fake.calls == [{"round_to": "none"}]
    assert table["k=2"]["elpd_diff"] == 0.0 and table["k=1"]["elpd_diff"] == pytest.approx(20.1)
    assert table["k=3"]["elpd_loo"] == pytest.approx(-101.2)  # unrounded
    assert selection.smallest_adequate_k(table, [1, 2, 3]) == 2
    summary = psis.loo_summary(None)
    assert (summary["elpd_loo"], summary["p_loo"]) == (-12.25, 1.5)
    assert summary["pareto_k"] == {"good": 1, "ok": 1, "bad": 1, "max": 0.8}


@pytest.mark.parametrize("router, smooth", [("prompt", True), ("context", False)],
                         ids=["noise_prompt_wants_a_smooth_router", "deciding_context_wants_a_sharp_one"])
def test_auto_router_prior_scale_follows_what_the_router_input_carries(router, smooth):
    data, _ = make_population(PopulationSpec(n_pairs=1200, dim=6, prompt_dim=24, k=2, test_fraction=0.3), seed=0)
    if router == "prompt":  # the prompt says nothing about the head: any structure a router finds is memorised
        data = replace(data, prompt=torch.randn(len(data), 24, generator=torch.Generator().manual_seed(1)))
    scale, info = auto_router_prior_scale(data, k=2, router=router, alpha=0.0, restarts=1, hidden=32)
    table = info["compare"]
    assert set(table) == {f"scale={s}" for s in ROUTER_PRIOR_SCALES} and info["holdout_pairs"] == 360
    assert table[f"scale={scale}"]["elpd_diff"] == 0.0
    if smooth:  # every smooth router ties with the smoothest (nothing to learn); the weakest prior memorises
        assert table["scale=0.03"]["elpd_diff"] < 4.0 and scale < 1.0, table
        assert table["scale=1.0"]["elpd_diff"] > 20.0, table
    else:
        assert scale >= 0.3, table
