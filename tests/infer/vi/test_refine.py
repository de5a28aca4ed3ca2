"""The linearised VI refined by HMC on the exact network (``infer.vi.refine``)."""

from dataclasses import dataclass

import pyro
import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.arviz import n_chains
from bayesmicro.infer import Fit, fit
from bayesmicro.infer.api import refit_like
from bayesmicro.infer.vi.laplace import LaplaceParams, laplace_curvature
from bayesmicro.infer.vi.refine import ExactLogJoint, RefineSchedule, hmc_refine
from bayesmicro.infer.vi import VISchedule
from tests.common import assert_close

SMALL = RefineSchedule(chains=16, draws=160, warmup=10)


@dataclass
class GaussianTarget:
    """log N(θ; mean, cov) in the ``ExactLogJoint`` interface."""

    mean: torch.Tensor
    precision: torch.Tensor
    dtype: torch.dtype = torch.float64
    diff: torch.Tensor = torch.zeros(1, 1)

    def value_and_grad(self, theta):
        centred = theta - self.mean
        return -0.5 * ((centred @ self.precision) * centred).sum(-1), -centred @ self.precision


def test_hmc_transitions_reach_and_keep_a_gaussian_target():
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    cov = factor @ factor.T / 5 + 0.2 * torch.eye(5, dtype=torch.float64)
    target = GaussianTarget(torch.arange(5, dtype=torch.float64), torch.linalg.inv(cov))
    start = torch.full((200, 5), -3.0, dtype=torch.float64)  # every chain far from the target
    mass = torch.linalg.cholesky(torch.eye(5, dtype=torch.float64) * 2)  # deliberately not the target's precision
    draws, info = hmc_refine(target, mass, start, RefineSchedule(chains=200, draws=6000, warmup=20, leapfrog=8), 0)
    assert draws.shape == (6000, 5) and 0.6 < info["accept_rate"] < 0.9
    assert 1.0 < info["max_r_hat"] < 1.3 and info["min_ess"] > 200  # from one start, a wrong mass: not perfect
    assert_close(draws.double().mean(0), target.mean, atol=0.08)
    assert_close(torch.cov(draws.double().T), cov, atol=0.12)


def test_draws_come_chain_by_chain():
    # a nearly flat target and tiny steps: every chain stays by its start, so each block of rows is one chain's
    target = GaussianTarget(torch.zeros(2, dtype=torch.float64), 1e-6 * torch.eye(2, dtype=torch.float64))
    start = 10 * torch.arange(4, dtype=torch.float64)[:, None].expand(4, 2)
    schedule = RefineSchedule(chains=4, draws=16, warmup=0, leapfrog=2, initial_step=1e-3)
    draws, info = hmc_refine(target, torch.eye(2, dtype=torch.float64), start, schedule, 0)
    assert info["draw_order"] == "chain" and info["iterations"] == 4
    assert_close(draws.double().reshape(4, 4, 2), start[:, None].expand(4, 4, 2), atol=0.01)
    assert info["max_r_hat"] > 10  # chains that never met


@dataclass
class QuarticTarget:
    """log p(θ) = −Σ θ⁴ / 4: curvature 3θ², so a chain started far out needs far smaller steps than the others."""

    dtype: torch.dtype = torch.float64
    diff: torch.Tensor = torch.zeros(1, 1)

    def value_and_grad(self, theta):
        return -(theta**4).sum(-1) / 4, -theta**3


def test_a_chain_started_where_the_target_is_far_more_curved_adapts_its_own_step_and_moves():
    # with one step size shared by the 32 chains (tuned on the 31 near the mode) the far chain rejected every
    # proposal and stayed at 6.0 — the stuck chain that wrecked PSIS-LOO on the built-in population's seed 1
    near = 0.3 * torch.randn(31, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = torch.cat([near, torch.full((1, 2), 6.0, dtype=torch.float64)])
    schedule = RefineSchedule(chains=32, draws=640, warmup=10, leapfrog=5, initial_step=0.3)
    draws, info = hmc_refine(QuarticTarget(), torch.eye(2, dtype=torch.float64), start, schedule, 0)
    far_chain = draws.reshape(32, 20, 2)[-1]
    assert float(far_chain.abs().max()) < 3.0 and float(far_chain[:, 0].std()) > 0.1  # it left 6.0 and moves
    assert info["min_chain_accept_rate"] > 0.1
    low, high = info["step_size_range"]
    assert low < info["step_size"] < high


def _at_the_map(alpha: float):
    """A small routed mixture's MAP: (θ* (1, P), its ``ExactLogJoint`` in float64, the Pyro model's trace there,
    the curvature)."""
    data, _ = make_population(PopulationSpec(n_pairs=120, dim=3, prompt_dim=2, context_dim=2, k=2), seed=3)
    point = fit(data, k=2, router="context", alpha=alpha, restarts=1, hidden=4)
    model = point.config.build_model()
    model.router.load_state_dict(point.router_state)
    train = data.part("train")
    router_x = point.config.router_input(train)
    curv = laplace_curvature(model, point.heads[0], train.diff(), router_x)
    joints = [ExactLogJoint(model, LaplaceParams.of(model), curv.prior_precision, train.diff(),
                            model.router.standardize(router_x), dtype=torch.float64, loo_mixture=mix)
              for mix in (False, True)]
    trace = pyro.poutine.trace(pyro.poutine.condition(model, data={"heads": point.heads[0]})).get_trace(
        train.diff(), router_x)
    return curv.theta[None].clone(), joints, trace, curv


def _numeric_grad(joint, theta: torch.Tensor, i: int, step: float = 1e-6) -> torch.Tensor:
    shift = torch.zeros_like(theta)
    shift[0, i] = step
    return ((joint.value_and_grad(theta + shift)[0] - joint.value_and_grad(theta - shift)[0]) / (2 * step))[0]


@pytest.mark.parametrize("alpha", [0.0, 0.5], ids=["no_entropy", "entropy"])
def test_exact_log_joint_is_the_pyro_models_potential_and_its_gradient(alpha):
    theta, (joint, _), trace, curv = _at_the_map(alpha)
    value, grad = joint.value_and_grad(theta)
    # the likelihood (and α·entropy) factors of the Pyro model NUTS samples, traced at the MAP
    factors = {name: float(site["fn"].log_prob(site["value"]).sum().detach()) for name, site in trace.nodes.items()
               if name in ("obs", "router_entropy")}
    assert ("router_entropy" in factors) == (alpha > 0)
    unnormalised_prior = float(-0.5 * (curv.prior_precision * curv.theta**2).sum())
    assert float(value[0]) - unnormalised_prior == pytest.approx(sum(factors.values()), rel=1e-5)
    for i in (0, 5, curv.theta.numel() - 1):  # a head weight, a first-layer weight, the last router bias
        assert_close(grad[0, i], _numeric_grad(joint, theta, i), rtol=1e-4, atol=1e-6)


def test_the_loo_mixture_target_adds_the_log_sum_of_inverse_pair_likelihoods():
    """q_mix(θ) ∝ p(θ | D) Σ_i 1 / p(y_i | θ): the potential gains log Σ_i exp(−log p(y_i | θ)), each p(y_i | θ) the
    Pyro model's likelihood of pair i."""
    theta, (posterior, mixture), trace, _ = _at_the_map(0.0)
    per_pair = trace.nodes["obs"]["fn"].log_prob(trace.nodes["obs"]["value"]).detach().double()  # (n,)
    gap = mixture.value_and_grad(theta)[0] - posterior.value_and_grad(theta)[0]
    assert float(gap[0]) == pytest.approx(float(torch.logsumexp(-per_pair, 0)), rel=1e-6)
    assert_close(mixture.value_and_grad(theta)[1][0, 5], _numeric_grad(mixture, theta, 5), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def routed():
    data, _ = make_population(PopulationSpec(n_pairs=300, dim=3, prompt_dim=2, context_dim=2, k=2), seed=4)
    run = fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=4,
              vi=VISchedule(router_posterior="refined", refine=SMALL))
    return data, run


def test_refined_vi_plugs_its_draws_into_the_network_and_replays(routed, tmp_path):
    data, run = routed
    info = run.summary["vi"]
    assert info["router_posterior"] == "refined" and not run.linearised_router
    assert run.n_draws == 160 and info["refine"]["chains"] == 16 and info["refine"]["iterations"] == 10
    assert n_chains(run) == 16  # ArviZ sees the chains: ESS and R-hat across them
    by_iteration = {k: v for k, v in info.items() if k != "chains"}  # as recorded before draws came by chain
    assert n_chains(Fit(run.config, run.heads, run.router_state, {**run.summary, "vi": by_iteration},
                        run.router_draws)) == 1  # runs saved before draws came chain by chain
    assert info["refine"]["log_joint_per_pair_end"] > info["refine"]["log_joint_per_pair_start"]
    loaded = Fit.load(run.save(tmp_path / "run"))
    assert_close(loaded.prefer_proba(data).mean, run.prefer_proba(data).mean, atol=0)
    again = refit_like(run, data)
    assert again.summary["vi"]["refine"]["chains"] == 16 and again.n_draws == 160
    assert_close(again.predict_proba(data), run.predict_proba(data), atol=1e-6)
    mixture = refit_like(run, data, refine_target="loo_mixture")  # the same chains, on the leave-one-out mixture
    assert mixture.summary["vi"]["refine"]["target"] == "loo_mixture" and info["refine"]["target"] == "posterior"
    assert mixture.n_draws == 160 and not torch.equal(mixture.heads, run.heads)


def test_above_max_pairs_the_linearised_vi_is_kept_and_said(routed):
    data, _ = routed
    run = fit(data, k=2, router="context", inference="vi", alpha=0.0, restarts=1, hidden=4,
              vi=VISchedule(laplace_draws=100, router_posterior="refined", refine=RefineSchedule(max_pairs=10)))
    assert run.summary["vi"]["router_posterior"] == "linearised" and run.linearised_router
    assert run.summary["vi"]["refine_skipped"].endswith("training pairs > refine.max_pairs = 10")


@pytest.mark.parametrize("settings, message", [
    (dict(chains=0), "refinement needs"), (dict(draws=0), "refinement needs"), (dict(leapfrog=0), "refinement needs"),
    (dict(warmup=-1), "refinement needs"), (dict(target_accept=1.0), "refinement needs"),
    (dict(target="prior"), "refinement target must be one of"),
], ids=["chains", "draws", "leapfrog", "warmup", "target_accept", "target"])
def test_bad_refine_schedule_is_refused_when_built(settings, message):
    with pytest.raises(BadInput, match=message):
        RefineSchedule(**settings)
