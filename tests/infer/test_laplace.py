"""The Laplace evidence at a mode, against a brute-force determinant of the full (P, P) posterior precision."""

import pytest
import torch
from torch.func import functional_call, jacrev

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer import fit
from bayesmicro.infer import laplace
from bayesmicro.infer.laplace import LaplaceParams, mode_log_evidence

HIDDEN = 4


def _mode(n_pairs: int):
    """A routed MAP fit (P = 2·3 + 4·4 + 4 + 2·4 + 2 = 36 parameters) on ``n_pairs`` pairs, and its model."""
    data, _ = make_population(PopulationSpec(n_pairs=n_pairs, dim=3, prompt_dim=2, context_dim=2, k=2,
                                             test_fraction=0.0), seed=3)
    point = fit(data, k=2, router="context", inference="map", alpha=0.0, restarts=1, hidden=HIDDEN)
    model = point.config.build_model()
    model.router.load_state_dict(point.router_state)
    return data, point.heads[0], model


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
