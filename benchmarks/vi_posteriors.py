"""The routed mixture's VI posteriors on the built-in population, in one run, one JSON.

    PYTHONPATH=. python benchmarks/vi_posteriors.py --seeds 0 1 2 --out vi_posteriors.json

Per seed and ``router_posterior`` (``refined``, ``linearised`` — the default — and ``laplace``; ``--svi`` adds SVI
over the output layer): fit seconds and, on the 1,500 held-out pairs, the coverage of the 90 % credible intervals of
P(chosen ≻ rejected) against the true probabilities, their mean width, ECE, NLL and accuracy — the numbers of the
README's VI table, with the same model as ``bayesmicro fit --inference vi`` on the built-in population (K = 3,
context router, α = 0, 3 restarts). One torch thread; the methods run one after the other.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bayesmicro._io import write_json
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.calibration import calibration_report
from bayesmicro.evaluate.metrics import accuracy
from bayesmicro.infer.api import fit
from bayesmicro.infer.vi import VISchedule


def run(router_posterior: str, seed: int) -> dict:
    data, truth = make_population(PopulationSpec(), seed)
    test = data.part("test")
    start = time.perf_counter()
    result = fit(data, k=3, router="context", inference="vi", alpha=0.0, seed=seed,
                 vi=VISchedule(router_posterior=router_posterior))
    seconds = time.perf_counter() - start
    cal = calibration_report(result.pointwise_log_lik(test).exp(), None, truth.prob(test))
    info = result.summary["vi"]
    return {"seconds": seconds, "accuracy": accuracy(result.predict_proba(test)), "mean_shift": info.get("mean_shift"),
            **{key: cal[key] for key in ("coverage", "interval_width", "ece", "nll")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--svi", action="store_true", help="also SVI over the router output layer")
    parser.add_argument("--out", default="vi_posteriors.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kinds = ("refined", "linearised", "laplace") + (("svi",) if args.svi else ())
    out = {"by_seed": {str(seed): {kind: run(kind, seed) for kind in kinds} for seed in args.seeds}}
    out["seeds"] = args.seeds
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_json(args.out, out)  # temp file, then rename
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
