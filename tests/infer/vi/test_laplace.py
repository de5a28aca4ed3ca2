"""The Laplace evidence at a mode, against a brute-force determinant of the full (P, P) posterior precision, and
the restart selection that uses it."""

import pytest
import torch
from torch.func import functional_call, jacrev

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer import fit
from bayesmicro.infer.vi import laplace
from bayesmicro.infer.api import refit_like
from bayesmicro.infer.vi.laplace import LaplaceParams, mode_log_evidence
from tests.common import assert_close

HIDDEN = 4


def _mode(n_pairs: int):
    """A routed MAP fit (P = 2·3 + 4·4 + 4 + 2·4 + 2 = 36 parameters) on ``n_pairs`` pairs, and its model."""
    data, _ = make_population(PopulationSpec(n_pairs=n_pairs, dim=3, prompt_dim=2, context_dim=2, k=2,
                                             test_fraction=0.0), seed=3)
    point = fit(data, k=2, router="context", inference="map", alpha=0.0, restarts=1, hidden=HIDDEN)
    return data, point.heads[0], point.mode_model()


def _brute_force_evidence(model, heads, diff, router_x) -> float:
    """log p(D | θ*) + log N(θ*; 0, Λ⁻¹) − ½ log det((F + Λ)/2π), F = Jᵀ diag(1/(p(1 − p))) J from the full
    Jacobian J = ∂p/∂θ (n, P) of every pair's probability at once."""
    layout = LaplaceParams.of(model)
    net = model.router.net.double()
    theta = torch.cat([heads.reshape(-1)] + [p.detach().reshape(-1) for p in net.parameters()]).double()
    z, diff = model.router.standardize(router_x).double(), diff.double()

    def probs(th):
        weights = torch.softmax(functional_call(net, layout.unflatten(th[layout.n_heads:]), (z,)), -1)
        return (weights * torch.sigmoid(diff @ th[:layout.n_heads].view(model.k, model.dim).T)).sum(-1)

    p, jac = probs(theta), jacrev(probs)(theta)
    prior = torch.full_like(theta, 1.0 / model.router_prior_scale**2)
    prior[:layout.n_heads] = 1.0 / model.prior_scale**2
    precision = jac.T @ (jac / (p * (1 - p))[:, None]) + torch.diag(prior)
    return float(p.log().sum() - 0.5 * (prior * theta**2).sum() + 0.5 * prior.log().sum()
                 - 0.5 * torch.linalg.slogdet(precision).logabsdet)


@pytest.mark.parametrize("n_pairs", [20, 200], ids=["more-parameters-than-pairs", "more-pairs-than-parameters"])
def test_mode_log_evidence_matches_the_full_determinant(n_pairs):
    data, heads, model = _mode(n_pairs)
    assert (LaplaceParams.of(model).size > n_pairs) == (n_pairs == 20)  # each case takes its own form
    diff, router_x = data.diff(), data.router_input(True)
    expected = _brute_force_evidence(model, heads, diff, router_x)
    assert mode_log_evidence(model, heads, diff, router_x) == pytest.approx(expected, abs=1e-8)


def test_mode_log_evidence_refuses_a_jacobian_over_its_memory_cap(monkeypatch):
    data, heads, model = _mode(20)
    monkeypatch.setattr(laplace, "_EVIDENCE_MAX_FLOATS", 20 * LaplaceParams.of(model).size - 1)
    with pytest.raises(ValueError, match=r"\(20, 36\) float64 Jacobian"):
        mode_log_evidence(model, heads, data.diff(), data.router_input(True))


def test_evidence_selection_keeps_the_restart_with_the_largest_laplace_evidence():
    data, _ = make_population(PopulationSpec(n_pairs=120, dim=3, prompt_dim=2, context_dim=2, k=2), seed=1)
    options = dict(k=2, router="context", alpha=0.0, restarts=4, hidden=HIDDEN, seed=1)
    by_evidence, by_loglik = fit(data, **options, select="evidence"), fit(data, **options)
    history = by_evidence.summary["restarts"]
    best = max(history, key=lambda row: row["log_evidence"])
    assert best["restart"] != max(history, key=lambda row: row["train_loglik"])["restart"]  # the rules disagree here
    train = data.part("train")
    kept = mode_log_evidence(by_evidence.mode_model(), by_evidence.heads[0], train.diff(), by_evidence.config.router_input(train))
    assert kept == pytest.approx(best["log_evidence"], abs=1e-6)
    assert by_evidence.summary["train_loglik"] == best["train_loglik"]
    assert by_loglik.summary["train_loglik"] == max(row["train_loglik"] for row in history)
    assert by_evidence.summary["restart_select"] == "evidence" and "log_evidence" not in by_loglik.summary["restarts"][0]
    again = refit_like(by_evidence, data)
    assert again.summary["restart_select"] == "evidence"
    assert_close(again.pointwise_log_lik(train), by_evidence.pointwise_log_lik(train), atol=1e-5)


@pytest.mark.parametrize("k, router, select, message", [
    (2, "none", "evidence", "routed mixture"), (1, "context", "evidence", "routed mixture"),
    (2, "context", "best", "select must be one of"),
], ids=["static-router", "one-head", "unknown-rule"])
def test_restart_selection_refuses_what_it_cannot_compare(k, router, select, message):
    data, _ = make_population(PopulationSpec(n_pairs=40, dim=3, prompt_dim=2, context_dim=2, k=2), seed=0)
    with pytest.raises(BadInput, match=message):
        fit(data, k=k, router=router, select=select, hidden=HIDDEN)
