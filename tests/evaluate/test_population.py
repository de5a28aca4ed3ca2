"""The issue's acceptance figures on the built-in population (slow: three VI fits of 4 500 pairs)."""

import pytest

from bayesmicro.evaluate.loo import reloo
from bayesmicro.evaluate.population import compare_on_population
from bayesmicro.data.synthetic import make_population


@pytest.mark.slow
def test_vi_on_the_builtin_population_is_calibrated_and_loo_is_reliable():
    results, fits = compare_on_population(seed=0, inference="vi", alpha=0.0)
    routed = results["routed_mixture"]
    assert fits["routed_mixture"].router_posterior == "refined"  # the default VI of a routed mixture
    assert routed["ece"] <= 0.03
    # 90 % intervals of P(chosen ≻ rejected): measured 0.892 on seed 0 (NUTS over the same posterior 0.892; the
    # linearised VI 0.848, the linearised Laplace 0.790). The issue asks 0.85–0.95.
    assert 0.85 <= routed["coverage"] <= 0.95
    assert routed["accuracy"] >= results["oracle"]["accuracy"] - 0.02
    data, _ = make_population(seed=0)
    # At the run's 640 draws PSIS finds 117 of 4 500 pairs with k > 0.7 (the exact posterior's ratios are
    # heavy-tailed: NUTS's 400 draws flag 92); mixture importance sampling on 2 560 draws of the leave-one-out
    # mixture leaves 2, and those are refitted exactly: no pair's elpd rests on weights with k > 0.7
    result = reloo(fits["routed_mixture"], data.part("train"))
    assert result["pareto_k"]["bad"] > 0 and "redraw" not in result
    mixture = result["mixture_is"]
    assert mixture["draws"] == 2_560 and mixture["still_above"] <= 10
    assert len(result["reloo"]["refitted"]) == mixture["still_above"] and result["reloo"]["unreliable"] == 0
