"""``bayesmicro bench vi_posteriors``: the routed mixture's VI posteriors on the built-in population.

    bayesmicro bench vi_posteriors --seeds 3 --json

Per seed and ``router_posterior`` (``refined``, ``linearised`` — the default — and ``laplace``; ``--svi`` adds SVI
over the output layer, ``run(svi=True)``): fit seconds and, on the 1,500 held-out pairs, the coverage of the 90 % credible intervals of
P(chosen ≻ rejected) against the true probabilities, their mean width, ECE, NLL and accuracy — the numbers of the
README's VI table, with the same model as ``bayesmicro fit --inference vi`` on the built-in population (K = 3,
context router, α = 0, 3 restarts). One torch thread; the methods run one after the other.
"""

from __future__ import annotations

import time

import torch

from bayesmicro.bench.report import log, markdown_table, write_suite
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.calibration import calibration_report
from bayesmicro.evaluate.metrics import accuracy
from bayesmicro.infer.api import fit
from bayesmicro.infer.vi import VISchedule


def run_one(router_posterior: str, seed: int) -> dict:
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


KINDS = ("refined", "linearised", "laplace")
COLUMNS = ["seed", "router_posterior", "coverage", "interval_width", "ece", "nll", "accuracy", "seconds"]


def run(seeds: int = 3, out_dir=None, svi: bool = False) -> dict:
    """Each ``router_posterior`` (and SVI with ``svi``) on seeds 0 … seeds−1, one torch thread."""
    torch.set_num_threads(1)
    kinds = KINDS + (("svi",) if svi else ())
    by_seed = {}
    for seed in range(seeds):
        by_seed[str(seed)] = {}
        for kind in kinds:
            by_seed[str(seed)][kind] = run_one(kind, seed)
            log(f"vi_posteriors: seed {seed} {kind} in {by_seed[str(seed)][kind]['seconds']:.1f} s")
    rows = [{"seed": seed, "router_posterior": kind, **row} for seed, per in by_seed.items() for kind, row in per.items()]
    results = {"seeds": seeds, "by_seed": by_seed}
    return write_suite(out_dir, "vi_posteriors", results,
                       [("Coverage of the 90 % intervals of held-out P(chosen ≻ rejected) against the truth",
                         markdown_table(rows, COLUMNS))])
