import json

import numpy as np
import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer import Fit, fit
from bayesmicro.infer.map import Schedule, curvature_transform, rms_norm
from tests.common import assert_close, small_pairs


def newton_penalized_logistic(x: torch.Tensor, prior_scale: float, iters: int = 50) -> torch.Tensor:
    """Independent solver: maximise Σ log σ(wᵀx_i) − ‖w‖²/(2 s²) by Newton/IRLS in float64."""
    x = x.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (1 - p) - w / prior_scale**2
        hess = -(x.T * (p * (1 - p))) @ x - torch.eye(x.shape[1], dtype=torch.float64) / prior_scale**2
        w = w - torch.linalg.solve(hess, grad)
    return w


@pytest.mark.parametrize("prior_scale", [0.3, 1.0, 10.0], ids=["tight", "unit", "loose"])
def test_single_bt_map_matches_newton_irls(prior_scale):
    data, _ = make_population(PopulationSpec(n_pairs=800, dim=6, k=2, test_fraction=0.0), seed=3)
    result = fit(data, k=1, router="none", prior_scale=prior_scale)
    w = newton_penalized_logistic(data.diff(), prior_scale)
    expected = torch.sigmoid(data.diff().double() @ w)
    # the float32 objective resolves ~1e-7 of its value; the stopping rule (Schedule.tol) asks for that much
    x = data.diff().double()

    def objective(head: torch.Tensor) -> float:
        return float(-(torch.nn.functional.logsigmoid(x @ head).sum() - head.pow(2).sum() / (2 * prior_scale**2)))

    assert objective(result.heads[0, 0].double()) - objective(w) <= 1e-7 * abs(objective(w))
    assert_close(result.predict_proba(data), expected, atol=3e-4)


def test_single_bt_adam_minibatch_reaches_the_same_optimum():
    data, _ = make_population(PopulationSpec(n_pairs=2000, dim=6, k=2, test_fraction=0.0), seed=4)
    result = fit(data, k=1, router="none", schedule=Schedule(optimizer="adam", epochs=60, batch_size=256, lr=5e-2))
    expected = torch.sigmoid(data.diff().double() @ newton_penalized_logistic(data.diff(), 1.0))
    assert_close(result.predict_proba(data), expected, atol=5e-3)


def test_routed_mixture_recovers_known_population_and_beats_single_bt():
    spec = PopulationSpec(n_pairs=3000)
    data, truth = make_population(spec, seed=1)
    test = data.part("test")
    from bayesmicro.evaluate.metrics import accuracy

    routed = accuracy(fit(data, k=3, router="context", restarts=2, alpha=0.0).predict_proba(test))
    single = accuracy(fit(data, k=1, router="none").predict_proba(test))
    oracle = accuracy(truth.prob(test))
    assert routed > oracle - 0.04
    assert single < oracle - 0.08


def test_best_restart_is_kept():
    data, _ = make_population(PopulationSpec(n_pairs=600), seed=2)
    result = fit(data, k=3, router="none", restarts=3)
    logliks = [r["train_loglik"] for r in result.summary["restarts"]]
    assert len(logliks) == 3
    assert result.summary["train_loglik"] == max(logliks)
    assert_close(result.pointwise_log_lik(data.part("train")).sum(), max(logliks), rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    data = small_pairs(n=60)
    result = fit(data, k=2, router="context", restarts=1, schedule=Schedule(max_iter=40))
    result.save(tmp_path / "run")
    loaded = Fit.load(tmp_path / "run")
    assert loaded.config == result.config
    assert_close(loaded.predict_proba(data), result.predict_proba(data), atol=0)
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "run").iterdir())
    assert repr(loaded) == repr(result) == ("Fit(k=2, router='context', inference='map', draws=1, dim=5, router_dim=5, "
                                            f"alpha=0.5, train_pairs={len(data.part('train'))})")


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be"),
    (dict(k=100), "larger than the number of training pairs"),
    (dict(router="bogus"), "router must be one of"),
    (dict(inference="magic"), "inference must be one of"),
    (dict(restarts=0), "restarts must be"),
    (dict(router_prior_scale=0.0), "router_prior_scale must be"),
], ids=["k0", "k_too_large", "bad_router", "bad_inference", "no_restarts", "router_prior_zero"])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(BadInput, match=message):
        fit(small_pairs(n=30), **kwargs)


def test_context_router_without_context_is_an_error():
    with pytest.raises(BadInput, match="context"):
        fit(small_pairs(n=30, d_c=None), k=2, router="context")


def test_run_rejects_data_of_another_dimension():
    result = fit(small_pairs(n=30), k=1, router="none")
    with pytest.raises(BadInput, match="expects 5"):
        result.predict_proba(small_pairs(n=10, d=7))


def test_k1_mixture_equals_single_bt_for_every_router():
    data = small_pairs(n=80)
    base = fit(data, k=1, router="none").predict_proba(data)
    for router in ("prompt", "context"):
        assert_close(fit(data, k=1, router=router).predict_proba(data), base, atol=1e-6)


def test_fit_is_deterministic_for_a_seed():
    data = small_pairs(n=80)
    a = fit(data, k=2, router="prompt", restarts=2, seed=5).predict_proba(data)
    b = fit(data, k=2, router="prompt", restarts=2, seed=5).predict_proba(data)
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()


def test_router_prior_scale_shrinks_the_router_and_round_trips(tmp_path):
    """A tight router prior leaves π(x) near uniform; a loose one lets the router follow the prompt. The setting is
    part of the run's config (saved and loaded), and a config written before it existed loads with the default."""
    data, _ = make_population(PopulationSpec(n_pairs=1500, prompt_weight=1.0), seed=1)
    spread = {}
    for scale in (1e-3, 1.0):
        result = fit(data, k=3, router="prompt", alpha=0.0, restarts=1, router_prior_scale=scale)
        assert result.config.router_prior_scale == scale
        spread[scale] = float(result.log_weights(data).exp().std(0).mean())
    assert spread[1e-3] < 0.01 < spread[1.0]
    result.save(tmp_path / "run")
    assert Fit.load(tmp_path / "run").config == result.config
    config = tmp_path / "run" / "config.json"
    raw = json.loads(config.read_text())
    del raw["router_prior_scale"]
    config.write_text(json.dumps(raw))
    assert Fit.load(tmp_path / "run").config.router_prior_scale == 0.3


@pytest.mark.parametrize("scale", [1e-21, 1e-7, 1.0, 1e4, 1e21], ids=["tiny", "near-duplicate", "unit", "large", "huge"])
def test_rms_norm_matches_a_float64_reference_at_any_feature_scale(scale):
    diff = torch.randn(3000, 700, generator=torch.Generator().manual_seed(0)) * scale
    diff[:5] = 0.0
    reference = float(diff.double().pow(2).sum(1).mean().sqrt())
    assert rms_norm(diff) == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("feature_scale", [1e-3, 1.0, 1e3], ids=["tiny", "unit", "huge"])
def test_curvature_transform_whitens_the_single_head_hessian(feature_scale):
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, generator=gen) * torch.tensor([10.0, 3.0, 1.0, 0.1, 0.01])  # anisotropic features
    diff = (torch.randn(300, 5, generator=gen) @ mixing) * feature_scale
    transform = curvature_transform(diff, prior_scale=2.0).double()
    x = diff.double()
    hessian = 0.25 * x.T @ x / 300 + torch.eye(5, dtype=torch.float64) / (300 * 4.0)
    assert_close(transform @ hessian @ transform, torch.eye(5, dtype=torch.float64), atol=1e-4)
    assert_close(transform, transform.T, atol=1e-12)
