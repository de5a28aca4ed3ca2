"""hh: does choosing the stage-1 restart by the labelled pairs' subsets bring stage 2 to the per-subset oracle?

    bayesmicro bench hh_restarts --seeds 10 --json   (8 restarts)

The protocol was written before seeds 5-9 were run (benchmarks/README, "hh: choosing the stage-1 restart"). Same
embedded HH-RLHF pairs, 80/20 splits, stage-1 recipe (``micro_stage1_smooth``) and B = 50 labelled training pairs per
subset as ``bayesmicro bench hh``. Per seed: the per-subset oracle's held-out accuracy, and for each of ``restarts``
stage-1 MAP restarts (seeds seed·1000 + r, as ``fit(restarts=R)``) its training log-likelihood, its context
information I(subset; head) on the labelled pairs (``routing.context_information``, the rule
``bayesmicro route --restart context`` uses), the argmax agreement of its router with the subsets on the labelled and
on the held-out pairs, and held-out accuracy per subset after ``posterior`` / ``hyre`` routing at B = 50.
``summary``: per group of seeds ("dev" 0-4, "confirm" 5-9) and per rule of choosing a restart, the mean accuracies
against the mean oracle − 0.02. One torch thread; ~65 s per seed on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np

from bayesmicro.bench.hh import HEADLINE_BUDGET, STAGE1_RECIPES, STAGE2_BASE, TOLERANCE, subset_scores
from bayesmicro.bench.hh_seeds import run_seeds
from bayesmicro.bench.report import json_block, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.infer.api import fit
from bayesmicro.routing import budget_subset, context_information, route_predict

RECIPE = STAGE1_RECIPES[STAGE2_BASE]
SEED_GROUPS = {"dev": range(0, 5), "confirm": range(5, 10)}
RULES = {  # how a restart is chosen; the first needs nothing a user lacks at stage 2, the last is a reference only
    "train_loglik of 2 (the suite's stage 1)": lambda rows: max(rows[:2], key=lambda r: r["train_loglik"]),
    "train_loglik of all": lambda rows: max(rows, key=lambda r: r["train_loglik"]),
    "context_information (primary)": lambda rows: max(rows, key=lambda r: r["context_information"]),
    "labelled_agreement": lambda rows: max(rows, key=lambda r: r["labelled_agreement"]),
    "heldout_agreement (reference: uses test labels)": lambda rows: max(rows, key=lambda r: r["heldout_agreement"]),
}


def agreement(optimum, part: EmbeddedPairs) -> float:
    """Share of pairs whose router argmax head matches their subset, under the better of the two matchings (K = 2)."""
    subsets = sorted(set(part.group.tolist()))
    hits = float(np.mean(optimum.log_weights(part).argmax(1).numpy() == np.searchsorted(subsets, part.group)))
    return max(hits, 1 - hits)


def run_seed(data: EmbeddedPairs, seed: int, restarts: int) -> dict:
    split = data.with_split(0.2, seed)
    train, test = split.part("train"), split.part("test")
    labelled = budget_subset(train, HEADLINE_BUDGET, seed=seed, by="group")
    oracle = {}
    for g in sorted(set(test.group.tolist())):
        rows = test.group == g
        own = fit(split.subset(np.flatnonzero(split.group == g)), k=1, router="none", seed=seed)
        oracle[g] = subset_scores(own.predict_proba(test.subset(np.flatnonzero(rows))).float(), test.group[rows])[g][
            "accuracy"]
    kept = fit(split, seed=seed, restarts=restarts, keep_restarts=True, k=2, router="prompt", **RECIPE)
    rows = []
    for mode in kept.restart_modes:
        row = {"train_loglik": mode.summary["train_loglik"], "context_information": context_information(mode, labelled),
               "labelled_agreement": agreement(mode, labelled), "heldout_agreement": agreement(mode, test)}
        for method in ("posterior", "hyre"):
            prob = route_predict(mode, labelled, test, method, seed=seed, by="group")
            row[method] = {g: v["accuracy"] for g, v in subset_scores(prob, test.group).items() if g != "all"}
        rows.append(row)
    return {"oracle": oracle, "restarts": rows}


def summarise(by_seed: dict[str, dict]) -> dict:
    out = {}
    for group, seeds in SEED_GROUPS.items():
        runs = [by_seed[str(s)] for s in seeds if str(s) in by_seed]
        if not runs:
            continue
        subsets = sorted(runs[0]["oracle"])
        threshold = {g: float(np.mean([r["oracle"][g] for r in runs])) - TOLERANCE for g in subsets}
        out[group] = {"seeds": [s for s in seeds if str(s) in by_seed], "oracle_minus_tolerance": threshold}
        for rule, choose in RULES.items():
            out[group][rule] = {}
            for method in ("hyre", "posterior"):
                acc = {g: float(np.mean([choose(r["restarts"])[method][g] for r in runs])) for g in subsets}
                out[group][rule][method] = {**acc, "passes": all(acc[g] >= threshold[g] for g in subsets)}
    return out


def run(seeds: int = 10, out_dir=None, restarts: int = 8) -> dict:
    """Seeds 0 … seeds−1 with ``restarts`` stage-1 restarts each, one torch thread."""
    by_seed = run_seeds(run_seed, list(range(seeds)), restarts)
    results = {"summary": summarise(by_seed), "by_seed": by_seed, "restarts": restarts}
    return write_suite(out_dir, "hh_restarts", results, [("Summary over seeds", json_block(results["summary"]))])
