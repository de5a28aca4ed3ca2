import pytest

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer import fit
from bayesmicro.infer.map import Schedule


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
