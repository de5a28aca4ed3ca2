import itertools
import math

import pytest
import torch

from bayesmicro.evaluate.irreducible import (binary_entropy, component_probs, expected_cross_entropy,
                                             theorem_3_2)
from tests.common import assert_close

# A tiny discrete population: 3 equally likely pair types x, K = 2 components. probs[x, k] = P(y=1 | x, z=k).
PROBS = torch.tensor([[0.9, 0.2], [0.6, 0.6], [0.05, 0.7]], dtype=torch.float64)
WEIGHTS = torch.tensor([[0.5, 0.5], [0.3, 0.7], [0.25, 0.75]], dtype=torch.float64)


def brute_force_quantities():
    """E_x by enumeration over x (uniform), then z, then y, in plain Python."""
    n, k = PROBS.shape
    entropy = variance = 0.0
    for x in range(n):
        for z, y in itertools.product(range(k), (0, 1)):
            p_y = PROBS[x, z].item() if y == 1 else 1 - PROBS[x, z].item()
            entropy += WEIGHTS[x, z].item() * -p_y * math.log(p_y) / n
        mean = sum(PROBS[x, z].item() for z in range(k)) / k
        variance += sum((PROBS[x, z].item() - mean) ** 2 for z in range(k)) / k / n
    return entropy, variance


def test_bound_parts_match_enumeration():
    entropy, variance = brute_force_quantities()
    out = theorem_3_2(PROBS, WEIGHTS)
    assert out["rho"] == pytest.approx(0.25)
    assert out["k"] == 2
    assert out["entropy"] == pytest.approx(entropy, abs=1e-12)
    assert out["variance"] == pytest.approx(variance, abs=1e-12)
    assert out["bound"] == pytest.approx(2 * 0.25 * 2 * variance + entropy, abs=1e-12)


def expected_ce_by_enumeration(q):
    n, k = PROBS.shape
    total = 0.0
    for x, z, y in itertools.product(range(n), range(k), (0, 1)):
        p_y = PROBS[x, z].item() if y == 1 else 1 - PROBS[x, z].item()
        q_y = q[x] if y == 1 else 1 - q[x]
        total += WEIGHTS[x, z].item() * p_y * -math.log(q_y) / n
    return total


def test_expected_cross_entropy_matches_enumeration_and_monte_carlo():
    q = torch.tensor([0.7, 0.4, 0.55], dtype=torch.float64)
    exact = expected_cross_entropy(q, PROBS, WEIGHTS)
    assert exact == pytest.approx(expected_ce_by_enumeration(q.tolist()), abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (400_000,), generator=gen)
    z = torch.multinomial(WEIGHTS[x], 1, generator=gen).squeeze(1)
    y = torch.rand(len(x), generator=gen, dtype=torch.float64) < PROBS[x, z]
    empirical = float(-torch.where(y, q[x].log(), (1 - q[x]).log()).mean())
    assert empirical == pytest.approx(exact, abs=5e-3)


def test_no_z_blind_predictor_beats_the_bound_on_a_fine_grid():
    """Minimise L_CE over every q(x) on a grid (each x independently): the best is ≥ the bound, and it is the true
    marginal P(y | x) = Σ_k π_k P*_k, whose L_CE is the marginal label entropy."""
    bound = theorem_3_2(PROBS, WEIGHTS)["bound"]
    grid = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    best = []
    for x in range(3):
        ce = [expected_ce_by_enumeration([g.item() if i == x else 0.5 for i in range(3)]) for g in grid]
        best.append(grid[int(torch.tensor(ce).argmin())].item())
    best_ce = expected_cross_entropy(torch.tensor(best, dtype=torch.float64), PROBS, WEIGHTS)
    marginal = (WEIGHTS * PROBS).sum(-1)
    assert_close(torch.tensor(best), marginal, atol=1e-3)
    assert best_ce >= bound
    assert best_ce == pytest.approx(float(binary_entropy(marginal).mean()), abs=1e-5)


def test_a_model_that_sees_z_reaches_the_entropy():
    assert expected_cross_entropy(PROBS, PROBS, WEIGHTS) == pytest.approx(theorem_3_2(PROBS, WEIGHTS)["entropy"])


def test_margin_space_reading_of_the_variance_would_not_be_a_bound():
    """Why the variance is of probabilities: with margins ±1000 a margin variance is ~1e6, yet predicting ½ costs
    log 2. The probability-space bound stays below log 2."""
    heads = torch.tensor([[1000.0], [-1000.0]])
    diff = torch.ones(5, 1)
    probs = component_probs(heads, diff)
    weights = torch.full((5, 2), 0.5, dtype=torch.float64)
    ce_half = expected_cross_entropy(torch.full((5,), 0.5), probs, weights)
    margin_gap = 2 * 0.5 * 2 * float((diff @ heads.T).var(dim=-1, unbiased=False).mean())
    assert ce_half == pytest.approx(math.log(2))
    assert margin_gap > ce_half
    assert theorem_3_2(probs, weights)["bound"] <= ce_half + 1e-12
