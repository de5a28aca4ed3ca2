"""VI, NUTS and EM over the summed-out mixture; posterior rewards and preference probabilities on ``Fit``."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer import Fit, fit
from bayesmicro.infer.em import EMSchedule
from bayesmicro.infer.nuts import GivenMassNUTS, NUTSSchedule, laplace_inverse_mass
from bayesmicro.infer.vi import VISchedule
from bayesmicro.models.bt import mixture_prob, reward_margins
from tests.common import assert_close, small_pairs
from tests.infer.test_map import newton_penalized_logistic

FAST_VI = VISchedule(steps=400, particles=2, draws=300)


def laplace(x: torch.Tensor, prior_scale: float, marginal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: posterior mode and sd of logistic regression Σ log σ(wᵀx_i) + N(0, s²) prior.

    ``marginal``: sd from the inverse Hessian (the full Gaussian); else 1/√diag(H), the sd the optimal
    mean-field Gaussian has for a Gaussian posterior."""
    w = newton_penalized_logistic(x, prior_scale)
    p = torch.sigmoid(x.double() @ w)
    hess = (x.double().T * (p * (1 - p))) @ x.double() + torch.eye(x.shape[1], dtype=torch.float64) / prior_scale**2
    return w, (torch.linalg.inv(hess).diagonal() if marginal else 1 / hess.diagonal()).sqrt()


@pytest.mark.parametrize("guide", ["normal", "lowrank"], ids=["mean_field", "low_rank"])
def test_vi_single_bt_matches_laplace_posterior(guide):
    data, _ = make_population(PopulationSpec(n_pairs=600, dim=4, k=1, test_fraction=0.0), seed=5)
    result = fit(data, k=1, router="none", inference="vi", vi=VISchedule(guide=guide, steps=600, particles=2,
                                                                           draws=2000))
    mode, sd = laplace(data.diff(), 1.0, marginal=guide == "lowrank")
    assert result.heads.shape == (2000, 1, 4)
    assert_close(result.heads[:, 0].mean(0), mode, atol=0.1)  # posterior mean, not mode
    assert_close(result.heads[:, 0].std(0), sd, rtol=0.15, atol=0.0)


def _mixture_problem():
    spec = PopulationSpec(n_pairs=400, dim=3, prompt_dim=2, context_dim=2, k=2, head_scale=4.0, test_fraction=0.0)
    return make_population(spec, seed=11)[0]


@pytest.mark.parametrize("k, router", [
    (1, "none"),
    pytest.param(2, "context", marks=pytest.mark.slow),  # ~2 min on a shared 2-core CPU
], ids=["single_bt", "routed_mixture"])
def test_vi_predictive_probabilities_agree_with_nuts(k, router):
    data = _mixture_problem()
    common = dict(k=k, router=router, alpha=0.0, restarts=2, hidden=4, seed=1)
    nuts = fit(data, inference="nuts", nuts=NUTSSchedule(draws=300, warmup=200, router_layers=(2,)), **common)
    steps, particles = (600, 2) if k == 1 else (1500, 4)
    # NUTS samples the heads and the router output layer, so VI targets the same posterior ("svi"), with a guide
    # whose rank covers every latent parameter (6 + 10): the default rank 10 put one pair 0.022-0.025 off NUTS
    # (0.016 before the router's standardisation was folded), a rank truncation rather than a posterior mismatch.
    rank = 6 + 10 if k == 2 else None
    vi = fit(data, inference="vi", vi=VISchedule(guide="lowrank", steps=steps, particles=particles, draws=1000,
                                                 router_posterior="svi", rank=rank), **common)
    p_nuts, p_vi = nuts.pointwise_log_lik(data).exp(), vi.pointwise_log_lik(data).exp()
    assert nuts.summary["nuts"]["divergences"] == 0
    assert float((p_vi.mean(0) - p_nuts.mean(0)).abs().max()) <= 0.02
    sd_nuts, sd_vi = p_nuts.std(0), p_vi.std(0)
    informative = sd_nuts > 0.01  # relative error of tiny sds is noise
    ratio = (sd_vi[informative] / sd_nuts[informative]).median()
    assert 0.75 <= float(ratio) <= 1.25, float(ratio)


@pytest.mark.slow  # ~1 min: NUTS over every router layer
def test_vi_posteriors_agree_with_nuts_over_every_router_layer():
    """The issue's tolerance (predictive mean within 0.02, sd within 25 %) against NUTS on the exact network: met by
    the refined VI; the Gaussians around the MAP approximate it less closely."""
    data = _mixture_problem()
    common = dict(k=2, router="context", alpha=0.0, restarts=2, hidden=4, seed=1)
    nuts = fit(data, inference="nuts", nuts=NUTSSchedule(draws=1000, warmup=300, router_layers=(0, 2)), **common)
    p_nuts = nuts.pointwise_log_lik(data).exp()
    assert nuts.summary["nuts"]["divergences"] == 0 and not nuts.linearised_router
    informative = p_nuts.std(0) > 0.01
    mean_gaps = {}
    for kind in ("laplace", "linearised", "refined"):
        approx = fit(data, inference="vi", vi=VISchedule(laplace_draws=4000, router_posterior=kind), **common)
        assert approx.linearised_router == (kind != "refined")
        assert set(nuts.router_draws) == set(approx.router_draws) == {"net.0.weight", "net.0.bias", "net.2.weight",
                                                                      "net.2.bias"}
        p_approx = approx.pointwise_log_lik(data).exp()
        # Measured max / mean gap: Laplace 0.036 / 0.010, linearised VI 0.045 / 0.0049, refined 0.016 / 0.0030
        # (0.018 / 0.0031 with one HMC step size shared by its chains); median sd ratio 1.14 / 1.08 / 1.01.
        gap = (p_approx.mean(0) - p_nuts.mean(0)).abs()
        ratio = (p_approx.std(0)[informative] / p_nuts.std(0)[informative]).median()
        assert float(gap.max()) <= (0.02 if kind == "refined" else 0.07) and float(gap.mean()) <= 0.015
        assert 0.75 <= float(ratio) <= 1.25, float(ratio)
        mean_gaps[kind] = float(gap.mean())
    assert mean_gaps["refined"] < mean_gaps["linearised"] < mean_gaps["laplace"]


def test_em_single_bt_equals_newton_solution():
    data = small_pairs(n=200, d=4)
    result = fit(data, k=1, router="none", inference="em", em=EMSchedule(posterior=False))
    assert result.n_draws == 1
    assert_close(result.heads[0, 0], newton_penalized_logistic(data.diff(), 1.0), atol=1e-5)


@pytest.mark.parametrize("router", ["none", "prompt"], ids=["static", "prompt"])
def test_em_reaches_the_map_objective(router):
    data, _ = make_population(PopulationSpec(n_pairs=800, dim=6, k=2, head_scale=4.0, test_fraction=0.0), seed=2)
    vi = VISchedule(steps=200, draws=200, laplace_draws=400, router_posterior="linearised")
    vi_fit = fit(data, k=2, router=router, alpha=0.0, restarts=3, hidden=8, inference="vi", vi=vi)
    em_fit = fit(data, k=2, router=router, alpha=0.0, restarts=3, hidden=8, inference="em",
                 em=EMSchedule(max_iter=400), vi=vi)
    # EM ascends the same objective: its training log-likelihood is as good as MAP's (up to optimiser slack) ...
    assert em_fit.summary["train_loglik"] >= vi_fit.summary["train_loglik"] - 0.01 * len(data)
    # ... and it carries the same kind of posterior, around its own optimum
    assert em_fit.n_draws == vi_fit.n_draws > 1
    assert em_fit.summary["em"]["router_posterior"] == vi_fit.summary["vi"]["router_posterior"]
    gap = (em_fit.predict_proba(data) - vi_fit.predict_proba(data)).abs()
    assert float(gap.mean()) < 0.02 and float(gap.max()) < 0.15
    sd_ratio = em_fit.prefer_proba(data).sd.mean() / vi_fit.prefer_proba(data).sd.mean()
    assert 0.67 < float(sd_ratio) < 1.5


def test_nuts_refuses_large_problems(monkeypatch):
    import bayesmicro.infer.nuts as nuts

    monkeypatch.setattr(nuts, "NUTS_MAX_PAIRS", 10)
    with pytest.raises(BadInput, match="NUTS is for small problems"):
        fit(small_pairs(n=30), k=1, router="none", inference="nuts")


# -- uncertainty-aware rewards ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def routed_vi_fit():
    """SVI over the heads and the router output layer (whose per-draw logits are exact, not linearised)."""
    data, _ = make_population(PopulationSpec(n_pairs=800, dim=5, prompt_dim=3, context_dim=3, k=2), seed=3)
    schedule = VISchedule(steps=400, particles=2, draws=300, router_posterior="svi")
    return data, fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=8, vi=schedule)


@pytest.fixture(scope="module")
def routed_laplace_fit():
    data, _ = make_population(PopulationSpec(n_pairs=300, dim=3, prompt_dim=2, context_dim=2, k=2,
                                             test_fraction=0.0), seed=4)
    schedule = VISchedule(laplace_draws=20_000, router_posterior="laplace")
    return data, fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=3, vi=schedule)


def _brute_force_router(theta: torch.Tensor, z: torch.Tensor, hidden: int, k: int) -> torch.Tensor:
    """(n, K) logits of Linear(d_r, hidden) → ReLU → Linear(hidden, K) from a flat vector (w1, b1, w2, b2)."""
    d_r = z.shape[1]
    w1, b1, w2, b2 = theta.split([hidden * d_r, hidden, k * hidden, k])
    return torch.relu(z @ w1.view(hidden, d_r).T + b1) @ w2.view(k, hidden).T + b2


ROUTER_TENSORS = ("0.weight", "0.bias", "2.weight", "2.bias")


def _brute_force_laplace(data, result) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(θ* (P,), per-pair P(chosen ≻ rejected) at θ* (n,), prior precision (P,), F + Λ (P, P)), θ = (heads, w1, b1,
    w2, b2), with the Fisher F from a full Jacobian of the probabilities."""
    router, k, d = result._router, result.config.k, result.config.dim
    z = ((data.router_input(True) - router.input_mean) / router.input_scale).double()
    diff = data.diff().double()
    theta = torch.cat([result.heads.mean(0).reshape(-1)] + [result.router_state[f"net.{n}"].reshape(-1)
                                                            for n in ROUTER_TENSORS]).double()

    def prob(theta):
        pi = torch.softmax(_brute_force_router(theta[k * d:], z, 3, k), -1)
        return (pi * torch.sigmoid(diff @ theta[:k * d].view(k, d).T)).sum(-1)

    jac = torch.autograd.functional.jacobian(prob, theta)  # (n, P)
    p = prob(theta)
    prior = torch.cat([torch.ones(k * d), torch.full((theta.numel() - k * d,), 1 / 0.3**2)]).double()
    return theta, p, prior, jac.T @ (jac / (p * (1 - p))[:, None]) + torch.diag(prior)


def test_laplace_covariance_is_the_inverse_fisher_plus_prior(routed_laplace_fit):
    data, result = routed_laplace_fit
    theta, p, prior, precision = _brute_force_laplace(data, result)
    cov = torch.linalg.inv(precision)
    draws = torch.cat([result.heads.reshape(result.n_draws, -1)] + [result.router_draws[f"net.{n}"].reshape(
        result.n_draws, -1) for n in ROUTER_TENSORS], 1).double()
    assert set(result.router_draws) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert_close(draws.mean(0), theta, atol=1e-5)  # antithetic draws: the mean is the mode
    sd = cov.diagonal().sqrt()
    assert_close(draws.std(0), sd, rtol=0.03, atol=0.0)
    corr = torch.corrcoef(draws.T) - cov / torch.outer(sd, sd)
    assert float(corr.abs().max()) < 0.05
    # the Laplace evidence: log p(D | θ*) + log N(θ*; 0, Λ⁻¹) − ½ log det((F + Λ) / 2π), by brute force
    log_lik = float(p.log().sum())
    log_prior = float(-0.5 * (prior * theta**2).sum() + 0.5 * prior.log().sum())
    expected = log_lik + log_prior + 0.5 * float(torch.linalg.slogdet(cov)[1])
    assert result.summary["vi"]["log_evidence"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("sites", [
    ("mix.heads", "mix.router.net.0.bias", "mix.router.net.0.weight", "mix.router.net.2.bias",
     "mix.router.net.2.weight"),
    ("mix.heads", "mix.router.net.2.bias", "mix.router.net.2.weight"),
], ids=["every_layer", "output_layer"])
def test_nuts_mass_matrix_is_the_laplace_covariance_of_the_sampled_sites(routed_laplace_fit, sites):
    data, result = routed_laplace_fit
    _, _, _, precision = _brute_force_laplace(data, result)
    k, d, hidden, d_r = result.config.k, result.config.dim, 3, data.router_input(True).shape[1]
    sizes = {"mix.heads": k * d, "mix.router.net.0.weight": hidden * d_r, "mix.router.net.0.bias": hidden,
             "mix.router.net.2.weight": k * hidden, "mix.router.net.2.bias": k}
    order = ["mix.heads"] + [f"mix.router.net.{n}" for n in ROUTER_TENSORS]  # θ's order in _brute_force_laplace
    starts = dict(zip(order, torch.tensor([0] + [sizes[s] for s in order]).cumsum(0).tolist()))
    idx = torch.cat([torch.arange(starts[s], starts[s] + sizes[s]) for s in sites])  # Pyro's (sorted) site order
    model = result.config.build_model()
    model.router.load_state_dict(result.router_state)
    inverse_mass = laplace_inverse_mass(model, result.heads.mean(0), data.diff(), data.router_input(True))
    # the sites' covariance with the unsampled router layers held fixed: the inverse of their precision block
    assert_close(inverse_mass(sites), torch.linalg.inv(precision[idx][:, idx]), rtol=1e-4, atol=1e-6)


def test_given_mass_nuts_samples_with_the_given_mass_matrix():
    cov = torch.tensor([[1.0, 0.98, 0.0], [0.98, 1.0, 0.0], [0.0, 0.0, 4.0]])

    def model():
        pyro.sample("b", dist.Normal(0.0, 2.0))
        pyro.sample("a", dist.MultivariateNormal(torch.zeros(2), cov[:2, :2]))

    asked = []

    def inverse_mass(sites):
        asked.append(sites)
        return cov

    kernel = GivenMassNUTS(model, inverse_mass)
    mcmc = MCMC(kernel, num_samples=600, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    assert asked == [("a", "b")]  # one dense block, in Pyro's sorted site order: a's 2 entries, then b
    assert_close(kernel.inverse_mass_matrix[("a", "b")], cov, atol=0)
    draws = torch.cat([mcmc.get_samples()["a"], mcmc.get_samples()["b"][:, None]], 1)
    assert_close(torch.cov(draws.T), cov, atol=0.25, rtol=0.15)
    # under the exact covariance the whitened target is a standard normal: NUTS needs no small steps
    assert kernel.step_size > 0.5


# slow: two 300-draw NUTS chains compared statistically (minutes on a shared 2-core CPU); the Laplace mass matrix's
# wiring stays in `make test`: test_nuts_mass_matrix_is_the_laplace_covariance_of_the_sampled_sites,
# test_given_mass_nuts_samples_with_the_given_mass_matrix (the kernel uses the given matrix), the 'adapt' mass of a
# router-less multi-chain fit (below) and, through the CLI, tests/cli/test_bayes_commands.py::
# test_fit_keeps_the_draws_warmup_and_mass_matrix_asked_for (a NUTS fit records mass 'laplace' and its warmup)
@pytest.mark.slow
def test_nuts_with_the_laplace_mass_matrix_samples_the_posterior_adapted_nuts_samples():
    data = _mixture_problem()
    common = dict(k=2, router="context", alpha=0.0, restarts=1, hidden=4, seed=1, inference="nuts")
    given, adapted = (fit(data, nuts=NUTSSchedule(draws=300, warmup=warmup, mass=mass), **common)
                      for mass, warmup in (("laplace", None), ("adapt", 150)))
    assert given.summary["nuts"]["mass"] == "laplace" and adapted.summary["nuts"]["mass"] == "adapt"
    assert given.summary["nuts"]["warmup"] == 100  # only the step size is adapted
    assert given.summary["nuts"]["divergences"] == adapted.summary["nuts"]["divergences"] == 0
    p_given, p_adapted = given.pointwise_log_lik(data).exp(), adapted.pointwise_log_lik(data).exp()
    gap = (p_given.mean(0) - p_adapted.mean(0)).abs()  # Monte Carlo error of two chains: measured max 0.020, mean 0.003
    assert float(gap.max()) <= 0.03 and float(gap.mean()) <= 0.006
    ratio = (p_given.std(0) / p_adapted.std(0)).median()
    assert 0.8 <= float(ratio) <= 1.25, float(ratio)


@pytest.mark.parametrize("settings, message", [
    (dict(mass="dense"), "mass must be one of"),
    (dict(chains=0), "chains=0"),
    (dict(draws=0), "draws=0"),
    (dict(warmup=-1), "warmup=-1"),
], ids=["mass", "chains", "draws", "warmup"])
def test_bad_nuts_schedule_is_refused_when_built(settings, message):
    with pytest.raises(BadInput, match=message):
        NUTSSchedule(**settings)


def test_laplace_draws_are_evaluated_on_the_linearised_router(routed_laplace_fit):
    data, result = routed_laplace_fit
    router, k = result._router, result.config.k
    z = (data.router_input(True) - router.input_mean) / router.input_scale
    names = ("0.weight", "0.bias", "2.weight", "2.bias")
    center = torch.cat([result.router_state[f"net.{n}"].reshape(-1) for n in names]).double()
    jac = torch.autograd.functional.jacobian(lambda t: _brute_force_router(t, z.double(), 3, k), center)  # (n, K, P)
    got = result.log_weights_draws(data)
    for s in (0, 1, 7, 10_001):
        theta = torch.cat([result.router_draws[f"net.{n}"][s].reshape(-1) for n in names]).double()
        logits = _brute_force_router(center, z.double(), 3, k) + jac @ (theta - center)
        assert_close(got[s].double(), torch.log_softmax(logits, -1), atol=1e-4)


def test_laplace_draws_survive_save_and_load(routed_laplace_fit, tmp_path):
    data, result = routed_laplace_fit
    result.save(tmp_path / "run")
    loaded = Fit.load(tmp_path / "run")
    assert set(loaded.router_draws) == set(result.router_draws)
    assert_close(loaded.prefer_proba(data).mean, result.prefer_proba(data).mean, atol=0)


def test_prefer_proba_summarises_the_draws(routed_vi_fit):
    data, result = routed_vi_fit
    test = data.part("test")
    proba = result.prefer_proba(test, level=0.8)
    # Reference: brute force over draws, each with its own router output layer.
    x = (test.router_input(True) - result._router.input_mean) / result._router.input_scale
    hidden = result._router.net[:-1](x)
    draws = []
    for s in range(result.n_draws):
        log_w = torch.log_softmax(hidden @ result.router_draws["net.2.weight"][s].T
                                  + result.router_draws["net.2.bias"][s], -1)
        draws.append(mixture_prob(log_w, reward_margins(result.heads[s], test.diff())))
    draws = torch.stack(draws).double()
    assert_close(proba.mean, draws.mean(0), atol=1e-6)
    assert_close(proba.sd, draws.std(0), atol=1e-6)
    assert_close(proba.lower, torch.quantile(draws, 0.1, dim=0), atol=1e-6)
    assert_close(proba.upper, torch.quantile(draws, 0.9, dim=0), atol=1e-6)
    assert torch.equal(proba.risk_averse, proba.lower)
    assert_close(proba.mean, result.predict_proba(test), atol=1e-6)
    assert bool((proba.upper - proba.lower > 0).all())


def test_reward_summary_matches_brute_force(routed_vi_fit):
    data, result = routed_vi_fit
    feats, rx = data.chosen[:50], data.router_input(True)[:50]
    summary = result.reward_summary(feats, rx, quantiles=(0.1, 0.5))
    per_draw = torch.einsum("nd,skd->snk", feats.double(), result.heads.double())
    weights = result.log_weights_draws(data.subset(torch.arange(50))).exp().double()
    mixture = (weights * per_draw).sum(-1)
    assert_close(summary.head_mean, per_draw.mean(0), atol=1e-5)
    assert_close(summary.head_sd, per_draw.std(0), atol=1e-5)
    assert_close(summary.head_quantiles[1], per_draw.median(0).values, atol=0.05)
    assert_close(summary.mixture_mean, mixture.mean(0), atol=1e-5)
    assert_close(summary.mixture_quantiles[0], torch.quantile(mixture, 0.1, dim=0), atol=1e-5)
    assert_close(result.risk_averse_reward(feats, rx, 0.1), summary.mixture_quantiles[0], atol=1e-9)
    # one posterior-mean reward: reward() is reward_summary()'s mean, per head and for the mixture
    assert_close(result.reward(feats), summary.head_mean.float(), atol=1e-4)
    assert_close(result.reward(feats, rx), summary.mixture_mean.float(), atol=1e-5)
    no_router = result.reward_summary(feats)
    assert no_router.mixture_mean is None and no_router.head_mean.shape == (50, 2)
    with pytest.raises(BadInput, match="features must have shape"):
        result.reward_summary(feats[:, :3])


def test_router_draws_survive_save_and_load(routed_vi_fit, tmp_path):
    data, result = routed_vi_fit
    result.save(tmp_path / "run")
    loaded = Fit.load(tmp_path / "run")
    assert set(loaded.router_draws) == {"net.2.weight", "net.2.bias"}
    assert_close(loaded.prefer_proba(data).mean, result.prefer_proba(data).mean, atol=0)


def _reward_sd(n_pairs: int, features: torch.Tensor) -> torch.Tensor:
    data, _ = make_population(PopulationSpec(n_pairs=n_pairs, dim=4, k=1, test_fraction=0.0), seed=7)
    result = fit(data, k=1, router="none", inference="vi", vi=FAST_VI)
    return result.reward_summary(features).mixture_sd


def test_reward_sd_shrinks_as_training_pairs_grow():
    features = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    sds = [float(_reward_sd(n, features).mean()) for n in (100, 400, 1600)]
    assert sds[0] > sds[1] > sds[2]
    assert sds[2] < sds[0] / 2.5  # roughly 1/√n: 16× the pairs, about 4× less sd


def test_reward_sd_is_larger_far_from_the_training_data():
    g = torch.Generator().manual_seed(1)
    n = 600
    scale = torch.tensor([1.0, 1.0, 1.0, 0.05])  # training responses barely vary along the last direction
    chosen, rejected = torch.randn(n, 4, generator=g) * scale, torch.randn(n, 4, generator=g) * scale
    w = torch.tensor([1.5, -1.0, 0.5, 0.0])
    flip = torch.rand(n, generator=g) > torch.sigmoid((chosen - rejected) @ w)
    chosen, rejected = torch.where(flip[:, None], rejected, chosen), torch.where(flip[:, None], chosen, rejected)
    from bayesmicro.data.embedded import EmbeddedPairs

    data = EmbeddedPairs(chosen=chosen, rejected=rejected, prompt=torch.zeros(n, 1))
    result = fit(data, k=1, router="none", inference="vi", vi=FAST_VI)
    near = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    far = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # same norm, off the training data's support
    sd = result.reward_summary(torch.cat([near, far])).mixture_sd
    assert float(sd[3]) > 3 * float(sd[:3].max())


def test_nuts_chains_are_exported_to_arviz_with_a_meaningful_r_hat():
    from bayesmicro.evaluate.arviz import _az, to_inference_data

    data, _ = make_population(PopulationSpec(n_pairs=200, dim=3, k=1, test_fraction=0.0), seed=6)
    result = fit(data, k=1, router="none", inference="nuts", nuts=NUTSSchedule(draws=100, warmup=80, chains=3))
    info = result.summary["nuts"]
    assert result.n_draws == 300 and info["chains"] == 3 and info["divergences"] == 0
    assert info["mass"] == "adapt"  # no router: the Laplace mass matrix does not apply
    assert info["max_r_hat"] < 1.05
    chains = result.heads.reshape(3, 100, -1)
    assert not torch.equal(chains[0], chains[1])  # each chain has its own seed
    idata = to_inference_data(result, data)
    posterior = idata.posterior["heads"].values
    assert posterior.shape == (3, 100, 1, 3)
    assert_close(posterior[1], result.heads[100:200].double().numpy(), atol=0)
    r_hat = _az().rhat(idata, var_names=["heads"])["heads"].values
    assert float(r_hat.max()) < 1.05
    # Chains stuck in different places would show: shift one chain and ArviZ's R̂ flags it.
    shifted = Fit(result.config, result.heads.clone(), result.router_state, result.summary)
    shifted.heads[:100] += 1.0
    assert float(_az().rhat(to_inference_data(shifted, data), var_names=["heads"])["heads"].values.max()) > 1.5


def test_bad_router_posterior_is_refused_before_fitting():
    with pytest.raises(BadInput, match="router_posterior must be one of"):
        fit(small_pairs(n=30), k=2, router="prompt", inference="vi", vi=VISchedule(router_posterior="full"))


@pytest.mark.parametrize("k, router", [(1, "none"), (2, "context")], ids=["single_bt", "routed_mixture"])
def test_nuts_with_a_traced_potential_draws_what_the_eager_one_draws(k, router):
    data = _mixture_problem()
    common = dict(k=k, router=router, alpha=0.0, restarts=1, hidden=3, seed=0, inference="nuts")
    traced, eager = (fit(data, nuts=NUTSSchedule(draws=40, warmup=40, jit=jit), **common) for jit in (True, False))
    assert_close(traced.heads, eager.heads, atol=1e-4)
    for key, value in eager.router_draws.items():
        assert_close(traced.router_draws[key], value, atol=1e-4)
