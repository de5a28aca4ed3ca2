"""NUTS with the Laplace covariance as its mass matrix against Pyro's diagonal adaptation, in one run, one JSON.

    PYTHONPATH=. python benchmarks/nuts_mass.py --seed 0 --draws 200 --out nuts_mass.json

Both sample the built-in population's routed mixture (heads and every router layer, from the same MAP, one torch
thread each, one after the other) with their default warm-up; reported per mass matrix: wall time, the smallest
head ESS, the smallest and median ESS of a held-out P(chosen ≻ rejected), divergences, and coverage / ECE / NLL of the
90 % intervals against the true probabilities — and the ratios of ESS per second.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from pyro.ops.stats import effective_sample_size

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.calibration import calibration_report
from bayesmicro.infer.api import fit
from bayesmicro.infer.nuts import NUTSSchedule


def run(mass: str, seed: int, draws: int) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--out", default="nuts_mass.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {mass: run(mass, args.seed, args.draws) for mass in ("laplace", "adapt")}
    per_second = {mass: {key: out[mass][key] / out[mass]["seconds"] for key in ("min_head_ess", "min_prob_ess",
                                                                                  "median_prob_ess")} for mass in out}
    out["laplace_over_adapt_ess_per_second"] = {key: per_second["laplace"][key] / per_second["adapt"][key]
                                                for key in per_second["laplace"]}
    out.update(seed=args.seed, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
