import math

import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.baselines import fit_shared_base_ensemble, hyre_log_weights
from bayesmicro.infer import fit
from tests.common import assert_close


def test_hyre_weights_are_the_normalised_product_of_head_likelihoods():
    margins = torch.tensor([[2.0, -1.0, 0.5], [1.0, 0.3, -2.0], [-0.5, 1.5, 0.0]])
    sig = torch.sigmoid(margins.double())
    expected = sig.prod(0) / sig.prod(0).sum()
    assert_close(hyre_log_weights(margins).exp(), expected, atol=1e-6)
    assert_close(hyre_log_weights(margins[:0]).exp(), torch.full((3,), 1 / 3), atol=1e-7)


def test_hyre_picks_the_head_that_explains_the_labelled_pairs():
    gen = torch.Generator().manual_seed(0)
    margins = torch.randn(50, 4, generator=gen)
    margins[:, 2] = 3.0  # head 2 is right on every labelled pair
    assert int(hyre_log_weights(margins).argmax()) == 2


@pytest.fixture(scope="module")
def population():
    return make_population(PopulationSpec(n_pairs=1500, dim=6, k=2, test_fraction=0.2), seed=1)[0]


def test_ensemble_without_shrinkage_is_k_copies_of_one_bt(population):
    ensemble = fit_shared_base_ensemble(population, k=3, seed=0, shrinkage=0.0)
    single = fit(population, k=1, router="none", prior_scale=1e4)
    test = population.part("test")
    expected = single.predict_proba(test)
    for k in range(3):
        assert_close(torch.sigmoid(ensemble.margins(test)[:, k]), expected, atol=2e-3, msg=f"head {k}")


def test_shrinkage_keeps_ensemble_heads_apart_and_near_their_priors(population):
    loose = fit_shared_base_ensemble(population, k=3, seed=0, shrinkage=0.0).heads
    tight = fit_shared_base_ensemble(population, k=3, seed=0, shrinkage=10.0).heads
    spread = lambda h: float(torch.cdist(h, h).sum())  # noqa: E731
    assert spread(tight) > 10 * spread(loose)
    uniform = fit_shared_base_ensemble(population, k=3, seed=0).predict_proba(population.part("test"))
    weighted = fit_shared_base_ensemble(population, k=3, seed=0).predict_proba(
        population.part("test"), torch.full((3,), -math.log(3)))
    assert_close(uniform, weighted, atol=1e-7)
