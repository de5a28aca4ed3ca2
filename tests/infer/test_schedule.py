import pytest
import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer import fit
from bayesmicro.infer.map import FULL_BATCH_LIMIT, Schedule, distinct_rows, full_batch_cost
from bayesmicro.models.mixture import BTMixture


@pytest.mark.parametrize("n, width, expected", [(2_000, 12, 20), (18_800, 6_144, 2), (1_000_000, 6_144, 2),
                                                (10_000, 2_500, 10)], ids=["small", "helpsteer2", "huge", "mid"])
def test_adam_epochs_are_capped_by_the_work_budget(n, width, expected):
    assert Schedule().adam_epochs(n, width) == expected
    assert Schedule(work_budget=None).adam_epochs(n, width) == 20
    assert Schedule(epochs=1).adam_epochs(n, width) == 1


def test_fit_runs_the_capped_number_of_epochs():
    data, _ = make_population(PopulationSpec(n_pairs=400, dim=4, k=2, test_fraction=0.0), seed=0)
    epochs = []
    schedule = Schedule(optimizer="adam", epochs=9, batch_size=100, work_budget=400 * 4 * 3)
    fit(data, k=1, router="none", schedule=schedule, on_step=lambda: epochs.append(1))
    assert len(epochs) == 3


@pytest.mark.parametrize("router, k, shared, expected", [
    ("prompt", 3, False, 60 * 8 * 3 + 60 * 5 * 16),     # every pair its own router row
    ("prompt", 3, True, 60 * 8 * 3 + 4 * 5 * 16),       # 4 prompts asked of 15 pairs each: 4 router rows
    ("prompt", 1, False, 60 * 8 * 1),                   # one head: no router
    ("none", 3, False, 60 * 8 * 3),                     # static weights: no router input
], ids=["distinct-prompts", "shared-prompts", "single-head", "static"])
def test_full_batch_cost_counts_heads_and_distinct_router_rows(router, k, shared, expected):
    g = torch.Generator().manual_seed(0)
    diff = torch.randn(60, 8, generator=g)
    prompts = torch.randn(4, 5, generator=g).repeat(15, 1) if shared else torch.randn(60, 5, generator=g)
    model = BTMixture(8, k, router, 5, hidden=16)
    assert full_batch_cost(model, diff, distinct_rows(prompts)[0] if model.router.reads_input else None) == expected


def test_auto_picks_lbfgs_up_to_the_limit_and_an_explicit_choice_always():
    assert Schedule().resolve(FULL_BATCH_LIMIT) == "lbfgs"
    assert Schedule().resolve(FULL_BATCH_LIMIT + 1) == "adam"
    assert Schedule(optimizer="lbfgs").resolve(10 * FULL_BATCH_LIMIT) == "lbfgs"
    assert Schedule(optimizer="adam").resolve(1) == "adam"
