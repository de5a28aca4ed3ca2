import torch

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.models.bt import mixture_log_prob, reward_margins
from tests.common import assert_close


def test_truth_probability_agrees_with_the_math_core():
    data, truth = make_population(PopulationSpec(n_pairs=500), seed=0)
    core = mixture_log_prob(truth.log_weights(data), reward_margins(truth.heads, data.diff())).exp()
    assert_close(truth.prob_chosen, core, atol=1e-5)


def test_labels_are_drawn_from_the_true_probability():
    # p_c = P(chosen ≻ rejected) is p_a when a won and 1 − p_a otherwise, so if labels are drawn from p_a then
    # E[p_c] = E[p_a² + (1 − p_a)²] = E[p_c² + (1 − p_c)²] (the right side is symmetric). Always keeping the
    # first response as chosen, or the likelier one, breaks this identity.
    _, truth = make_population(PopulationSpec(n_pairs=40000), seed=1)
    p = truth.prob_chosen.double()
    assert abs(float(p.mean()) - float((p**2 + (1 - p) ** 2).mean())) < 0.006


def test_same_seed_same_population():
    a, _ = make_population(PopulationSpec(n_pairs=100), seed=3)
    b, _ = make_population(PopulationSpec(n_pairs=100), seed=3)
    assert torch.equal(a.chosen, b.chosen) and (a.split == b.split).all()


def test_router_truth_is_sharp_and_context_driven():
    data, truth = make_population(PopulationSpec(n_pairs=3000), seed=4)
    groups = data.group
    dominant = truth.weights.argmax(1).numpy()
    agreement = max(
        sum((dominant[groups == f"g{g}"] == h).mean() for g, h in zip(range(3), perm)) / 3
        for perm in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
    )
    assert agreement > 0.8
