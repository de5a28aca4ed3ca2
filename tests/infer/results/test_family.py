"""One result family: the embedded mixture's ``Fit`` and the latent-class result answer predict, reward, draws,
save and load alike."""

from __future__ import annotations

import pytest
import torch

import bayesmicro
from bayesmicro.data.protocols.comparisons import comparisons_from_columns
from bayesmicro.infer.latent_class import fit_latent_class
from bayesmicro.infer.results.base import Posterior
from bayesmicro.infer.results.latent_class import LatentClassResult
from bayesmicro.infer.results.mixture import Fit
from tests.common import small_pairs
from tests.infer.results.test_latent_class import _table


@pytest.fixture(scope="module")
def both() -> list[tuple[Posterior, object]]:
    data = small_pairs(n=200)
    mixture = bayesmicro.fit(data, k=2, router="none", restarts=1)
    cols = _table(n_users=10, per_user=8)
    pairs = comparisons_from_columns(cols, context_cols=["lang"])
    latent = LatentClassResult.from_fit(fit_latent_class(pairs, 2, restarts=1, seed=0), pairs.meta)
    return [(mixture, data), (latent, cols)]


def test_every_result_is_a_posterior_with_the_same_methods(both, tmp_path):
    for i, (result, data) in enumerate(both):
        assert isinstance(result, Posterior)
        assert torch.equal(result.predict(data), result.predict_proba(data))
        draws = result.draws()
        assert draws["heads"].shape[0] == result.n_draws >= 1
        heads = draws["heads"][0]
        rewards = result.reward(torch.eye(heads.shape[1]))
        assert rewards.shape == (heads.shape[1], heads.shape[0])
        loaded = bayesmicro.load(result.save(tmp_path / f"run{i}"))
        assert type(loaded) is type(result)
        assert torch.equal(loaded.predict(data), result.predict(data))


def test_fit_draws_name_the_router_draws(both):
    fit = both[0][0]
    assert isinstance(fit, Fit) and set(fit.draws()) == {"heads"}
