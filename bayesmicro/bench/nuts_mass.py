"""``bayesmicro bench nuts_mass``: NUTS with the Laplace covariance as its mass matrix against Pyro's diagonal
adaptation, in one run (seed 0 by default, 200 draws).

    bayesmicro bench nuts_mass --json

Both sample the built-in population's routed mixture (heads and every router layer, from the same MAP, one torch
thread each, one after the other) with their default warm-up; reported per mass matrix: wall time, the smallest
head ESS, the smallest and median ESS of a held-out P(chosen ≻ rejected), divergences, and coverage / ECE / NLL of the
90 % intervals against the true probabilities — and the ratios of ESS per second.
"""

from __future__ import annotations

import time

import torch
from pyro.ops.stats import effective_sample_size

from bayesmicro.bench.report import log, markdown_table, write_suite
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.calibration import calibration_report
from bayesmicro.infer.api import fit
from bayesmicro.infer.nuts import NUTSSchedule


def run_one(mass: str, seed: int, draws: int) -> dict:
    data, truth = make_population(PopulationSpec(), seed)
    test = data.part("test")
    start = time.perf_counter()
    result = fit(data, k=3, router="context", inference="nuts", alpha=0.0, seed=seed,
                 nuts=NUTSSchedule(draws=draws, mass=mass))
    seconds = time.perf_counter() - start
    probs = result.pointwise_log_lik(test).exp()
    ess = effective_sample_size(probs.double()[None], chain_dim=0, sample_dim=1)
    cal = calibration_report(probs, None, truth.prob(test))
    info = result.summary["nuts"]
    return {"seconds": seconds, "warmup": info["warmup"], "draws": draws, "mass": info["mass"],
            "min_head_ess": info["min_ess"], "divergences": info["divergences"],
            "min_prob_ess": float(ess.min()), "median_prob_ess": float(ess.median()),
            **{key: cal[key] for key in ("coverage", "interval_width", "ece", "nll")}}


COLUMNS = ["seed", "mass", "seconds", "min_head_ess", "min_prob_ess", "median_prob_ess", "divergences", "coverage",
           "nll"]


def run(seeds: int = 1, out_dir=None, draws: int = 200) -> dict:
    """Both mass matrices on seeds 0 … seeds−1 (``draws`` draws each), one torch thread."""
    torch.set_num_threads(1)
    by_seed = {}
    for seed in range(seeds):
        out = {}
        for mass in ("laplace", "adapt"):
            out[mass] = run_one(mass, seed, draws)
            log(f"nuts_mass: seed {seed} {mass} in {out[mass]['seconds']:.0f} s")
        per_second = {mass: {key: out[mass][key] / out[mass]["seconds"]
                             for key in ("min_head_ess", "min_prob_ess", "median_prob_ess")} for mass in out}
        out["laplace_over_adapt_ess_per_second"] = {key: per_second["laplace"][key] / per_second["adapt"][key]
                                                    for key in per_second["laplace"]}
        by_seed[str(seed)] = out
    rows = [{"seed": seed, "mass": mass, **out[mass]} for seed, out in by_seed.items() for mass in ("laplace", "adapt")]
    return write_suite(out_dir, "nuts_mass", {"seeds": seeds, "draws": draws, "by_seed": by_seed},
                       [("ESS and calibration per mass matrix", markdown_table(rows, COLUMNS))])
