"""Numerical extremes: huge and tiny feature scales, near-duplicate responses, K = 1, a router saturated on one head.

Each must give finite losses, finite parameters and probabilities in [0, 1] — and, where the answer is known, the
right one.
"""

from __future__ import annotations

import re

import numpy as np
import pyro
import pytest
import torch
from scipy.optimize import minimize

import bayesmicro as bm
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import accuracy
from bayesmicro.infer.api import _feature_scale_blamed
from bayesmicro.infer.map import Schedule
from bayesmicro.infer.nuts import NUTSSchedule
from bayesmicro.models.bt import bt_log_prob, entropy, mixture_log_prob, reward_margins, responsibilities
from bayesmicro.models.mixture import BTMixture
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from tests.common import assert_close


def _scaled(data: EmbeddedPairs, factor: float) -> EmbeddedPairs:
    return EmbeddedPairs(data.chosen * factor, data.rejected * factor, data.prompt * factor,
                         group=data.group, split=data.split)


def _assert_sane(fitted: bm.Fit, data: EmbeddedPairs) -> torch.Tensor:
    assert torch.isfinite(fitted.heads).all()
    assert all(torch.isfinite(v).all() for v in fitted.router_state.values())
    assert all(np.isfinite(r["loss_per_pair"]) and np.isfinite(r["train_loglik"]) for r in fitted.summary["restarts"])
    prob = fitted.predict_proba(data)
    assert torch.isfinite(prob).all() and bool(((prob >= 0) & (prob <= 1)).all())
    assert bool((fitted.pointwise_log_lik(data) <= 0).all())
    return prob


@pytest.fixture(scope="module")
def population():
    data, truth = make_population(PopulationSpec(n_pairs=800, dim=6, prompt_dim=4, context_dim=3, k=2), seed=3)
    return data


@pytest.mark.parametrize("factor", [1e4, 1e-4], ids=["features_x1e4", "features_x1e-4"])
def test_feature_scale_extremes_stay_finite(population, factor):
    scaled = _scaled(population, factor)
    fitted = bm.fit(scaled, k=2, router="prompt", restarts=1, seed=0)
    prob = _assert_sane(fitted, scaled.part("test"))
    if factor > 1:
        # The heads' prior is in feature units and the router standardises its input, so features ×1e4 pose the
        # unscaled problem with a head prior sd of 1e4: the same fit.
        reference = bm.fit(population, k=2, router="prompt", restarts=1, seed=0, prior_scale=factor)
        expected = reference.predict_proba(population.part("test"))
        assert_close(prob, expected, atol=0.01)
        assert accuracy(prob) == pytest.approx(accuracy(expected), abs=0.01)


def test_adam_on_huge_features_stays_finite(population):
    scaled = _scaled(population, 1e4)
    fitted = bm.fit(scaled, k=2, router="prompt", restarts=1, schedule=Schedule(optimizer="adam", epochs=3))
    _assert_sane(fitted, scaled.part("test"))


def test_near_duplicate_responses_keep_their_difference():
    """chosen and rejected differ by ~1e-7 (float64 storage): the difference survives, fitting stays finite and the
    fitted head points the true way."""
    g = np.random.default_rng(0)
    n, d = 400, 5
    truth = g.normal(size=d)
    base = g.normal(size=(n, d))
    step = 1e-7 * g.normal(size=(n, d))
    step *= np.sign(step @ truth)[:, None]  # the chosen response is the one the true head prefers
    data = EmbeddedPairs(torch.from_numpy(base + step), torch.from_numpy(base), torch.from_numpy(g.normal(size=(n, 2))))
    assert_close(data.diff(), torch.from_numpy(step).float(), atol=0, rtol=1e-5)  # not rounded away in float32
    fitted = bm.fit(data, k=1, restarts=1, prior_scale=1e8)
    prob = _assert_sane(fitted, data)
    head = fitted.heads[0, 0].double()
    assert float(head @ torch.from_numpy(truth) / head.norm() / np.linalg.norm(truth)) > 0.9
    assert accuracy(prob) > 0.9


def test_fp16_features_are_subtracted_in_float32():
    chosen = torch.tensor([[1000.0, 1.0]], dtype=torch.float16)
    rejected = torch.tensor([[999.5, 1.0]], dtype=torch.float16)
    data = EmbeddedPairs(chosen, rejected, torch.zeros(1, 1))
    assert data.diff().dtype == torch.float32
    assert data.diff().tolist() == [[0.5, 0.0]]


# -- K = 1 is the single BT model ------------------------------------------------------------------------------------
def test_one_head_mixture_is_exactly_bt():
    margins = torch.randn(50, 1) * 30
    assert torch.equal(mixture_log_prob(torch.zeros(50, 1), margins), bt_log_prob(margins)[:, 0])


def test_k_identical_heads_equal_one_bt_head_whatever_the_weights():
    diff, head = torch.randn(40, 4), torch.randn(4)
    log_w = torch.log_softmax(torch.randn(40, 3) * 5, -1)
    margins = reward_margins(head.expand(3, 4), diff)
    assert_close(mixture_log_prob(log_w, margins), bt_log_prob(diff @ head), atol=1e-5)


def test_fit_k1_equals_scipy_map_logistic_regression(population):
    """fit(k=1) maximises Σ log σ(wᵀΔ) − ½‖w‖²/s²; scipy finds the same optimum in float64."""
    train = population.part("train")
    diff = train.diff().double().numpy()
    s = 2.0

    def objective(w):
        z = diff @ w
        grad_z = -1.0 / (1.0 + np.exp(z))  # d/dz of softplus(−z)
        return np.logaddexp(0.0, -z).sum() + 0.5 * w @ w / s**2, diff.T @ grad_z + w / s**2

    reference = minimize(objective, np.zeros(diff.shape[1]), jac=True, method="L-BFGS-B", tol=1e-12).x
    fitted = bm.fit(population, k=1, router="prompt", prior_scale=s)
    assert fitted.config.router == "none"
    assert_close(fitted.heads[0, 0], reference, atol=2e-4, rtol=2e-4)


# -- a router that puts all weight on one head -----------------------------------------------------------------------
@pytest.mark.parametrize("logits", [[1e4, -1e4, -1e4], [0.0, -float("inf"), -float("inf")]],
                         ids=["logits_pm1e4", "logits_minus_inf"])
def test_static_router_saturated_on_one_head(logits):
    diff = torch.randn(30, 4) * 3
    model = BTMixture(4, 3, "none", alpha=0.5)
    with torch.no_grad():
        model.router.logits.copy_(torch.tensor(logits))
    heads = torch.randn(3, 4)
    log_w = model.router.log_weights(None, 30).detach()
    margins = reward_margins(heads, diff)
    assert_close(mixture_log_prob(log_w, margins), bt_log_prob(margins[:, 0]), atol=1e-6)
    assert torch.isfinite(entropy(log_w)).all() and float(entropy(log_w).abs().max()) == 0.0
    resp = responsibilities(log_w, margins)
    assert torch.isfinite(resp).all() and torch.equal(resp[:, 0], torch.ones(30))
    # the full Pyro objective (likelihood + α·entropy + prior) and its gradient stay finite
    pyro.clear_param_store()
    guide = AutoDelta(model, init_loc_fn=lambda site: heads)
    loss = Trace_ELBO()(model, guide)(diff, None)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None] + [
        p.grad for p in guide.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_prompt_router_saturated_on_one_head(population):
    fitted = bm.fit(population, k=2, router="prompt", restarts=1)
    state = {k: v.clone() for k, v in fitted.router_state.items()}
    state["net.2.weight"].zero_()
    state["net.2.bias"].copy_(torch.tensor([1e4, -1e4]))
    saturated = bm.Fit(fitted.config, fitted.heads, state)
    test = population.part("test")
    log_w = saturated.log_weights(test)
    assert torch.isfinite(log_w).all() and torch.equal(log_w[:, 0], torch.zeros(len(test)))
    prob = saturated.predict_proba(test)
    assert_close(prob, torch.sigmoid(test.diff() @ fitted.heads[0, 0]), atol=1e-6)
    assert torch.isfinite(saturated.pointwise_log_lik(test)).all()


@pytest.mark.parametrize("inference", ["vi", "nuts"])
def test_curvature_beyond_float64_names_the_feature_scale(population, inference):
    scaled = _scaled(population.subset(np.arange(300)), 1e20)
    largest = float(scaled.part("train").diff().abs().max())
    message = re.escape(f"features are too large (|chosen − rejected| reaches {largest:.3g};")
    # Either the posterior curvature still factors in float64 (whether it does depends on where the MAP lands) and
    # the fit is sane, or the failure is a BadInput naming the feature scale — never an internal LinAlgError.
    try:
        fitted = bm.fit(scaled, k=2, router="prompt", inference=inference, restarts=1, seed=0,
                        nuts=NUTSSchedule(draws=10, warmup=10))
    except BadInput as err:
        assert re.search(message, str(err)), str(err)
    else:
        _assert_sane(fitted, scaled)


def test_a_failed_factorisation_on_ordinary_features_stays_an_internal_error():
    with pytest.raises(torch.linalg.LinAlgError):
        with _feature_scale_blamed("vi", torch.full((3, 2), 1e3)):
            torch.linalg.cholesky(-torch.eye(2))
