"""The built-in comparison: single BT, static mixture and routed mixture against the oracle on a known population."""

from __future__ import annotations

import time
from collections.abc import Callable

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.calibration import calibration_report
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import RestartSelect

# name → (K or None for the comparison's K, router or None for the comparison's router: the routed mixture)
BASELINES = {"single_bt": (1, "none"), "static_mixture": (None, "none"), "routed_mixture": (None, None)}


def compare_on_population(spec: PopulationSpec = PopulationSpec(), seed: int = 0, k: int | None = None,
                          router: str = "context", on_step: Callable[[], None] | None = None,
                          routed_select: str = "loglik", **fit_kwargs) -> tuple[dict, dict[str, Fit]]:
    """Fit each model on the population's training pairs and score all of them on its held-out pairs.
    ``routed_select``: the routed mixture's restart rule (``fit(select=…)``; the others keep the likelihood's).

    Returns ({model: metrics, ..., "fit_seconds": s}, {model: Fit}). ``oracle`` scores the true probabilities.
    """
    data, truth = make_population(spec, seed)
    test = data.part("test")
    k = k or spec.k
    results, fits = {}, {}
    start = time.perf_counter()
    for name, (k_model, router_model) in BASELINES.items():
        routed = router_model is None
        router_model = router if routed else router_model
        select = routed_select if routed else RestartSelect.LOGLIK.value
        fits[name] = fit(data, k=k_model or k, router=router_model, seed=seed, on_step=on_step, select=select,
                         **fit_kwargs)
        results[name] = score(fits[name].predict_proba(test), test.group)
        calibration = calibration_report(fits[name].pointwise_log_lik(test).exp(), None,
                                         truth.prob(test) if fits[name].n_draws > 1 else None)
        results[name].update({key: calibration[key] for key in ("ece", "coverage", "interval_width")
                              if key in calibration})
    results["fit_seconds"] = time.perf_counter() - start
    results["oracle"] = score(truth.prob(test), test.group)
    results["oracle"]["ece"] = calibration_report(truth.prob(test))["ece"]
    results["population"] = {"seed": seed, "test_pairs": len(test), "train_pairs": len(data) - len(test)}
    return results, fits
