"""``bayesmicro bench routing_synthetic``: stage 2 on synthetic populations with reversed subgroups (issue 5's
done-when numbers).

    bayesmicro bench routing_synthetic --json

1. Routing: stage 1 (prompt router, no context) is fitted on population A (prompt_weight 1: the prompt reveals the
   subgroup often enough for the heads w, −w to be identifiable); routing is evaluated on population B with the same
   heads and group contexts where ONLY the context decides the subgroup (prompt_weight 0). Budget curves B = 10, 25,
   50, 100 labelled train pairs per group for hedge, posterior, amortized, hyre; oracle = the true probabilities.
2. Coverage: heads from a context-routed fit on population B (+ Laplace head draws); new users (context withheld,
   static prior centred at the population mean) with n = 5, 20, 50 labels; 90 % intervals for P(a_w ≻ a_l) on the
   user's held-out pairs against the truth.
3. Active queries vs random: per user of population C, accuracy on held-out pairs after n labels chosen by EIG or at
   random.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bayesmicro.bench.report import json_block, log, write_suite
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit, FitConfig
from bayesmicro.routing.active import active_curve
from bayesmicro.routing.posterior import laplace_heads, predict_with_posterior, weight_posterior
from bayesmicro.routing.amortized import amortized_route
from bayesmicro.routing.common import budget_subset
from bayesmicro.routing.route import budget_curve


def routing(seed: int) -> dict:
    spec_a = PopulationSpec(k=2, reversed_heads=True, prompt_weight=1.0, n_pairs=4000)
    spec_b = PopulationSpec(k=2, reversed_heads=True, prompt_weight=0.0, n_pairs=4000)
    data_a, _ = make_population(spec_a, seed)
    data_b, truth_b = make_population(spec_b, seed)
    start = time.perf_counter()
    stage1 = fit(data_a, k=2, router="prompt", restarts=1, alpha=0.0, seed=seed)
    test = data_b.part("test")
    out = {"stage1_fit_seconds": time.perf_counter() - start,
           "oracle": score(truth_b.prob(test), test.group), "stage1_no_context": score(stage1.predict_proba(test),
                                                                                         test.group)}
    start = time.perf_counter()
    out["budget_curve"] = budget_curve(stage1, data_b, ["hedge", "posterior", "amortized", "hyre"],
                                       [10, 25, 50, 100], seed=seed, score_fn=score)
    out["routing_seconds"] = time.perf_counter() - start
    # amortized q(π | x, c) (one forward pass, no labels of the test pairs) vs the exact posterior given B = 50
    labelled = budget_subset(data_b.part("train"), 50, seed=seed)
    amortized = amortized_route(stage1, labelled, seed=seed)
    out["amortized_vs_exact"] = {}
    for group in sorted(set(test.group.tolist())):
        rows = np.flatnonzero(test.group == group)
        exact = weight_posterior(stage1, labelled.subset(np.flatnonzero(labelled.group == group)), concentration=1.0)
        out["amortized_vs_exact"][group] = {"exact_mean": exact.mean().tolist(), "exact_ess": exact.ess,
                                            "amortized_mean": amortized.mean_weights(test.subset(rows)).mean(0).tolist()}
    return out


def coverage(seed: int, level: float = 0.9) -> dict:
    # a soft router (sharpness 1.5, context noise 0.5): users' true π lie inside the simplex; with sharpness 8
    # π_u = 1 − 1e-7 and an equal-tailed interval can never cover a truth on the boundary
    soft = dict(router_sharpness=1.5, context_noise=0.5)
    spec = PopulationSpec(k=2, reversed_heads=True, prompt_weight=0.0, n_pairs=6000, test_fraction=0.0, **soft)
    data, _ = make_population(spec, seed)
    stage = fit(data, k=2, router="context", restarts=1, alpha=0.0, seed=seed)
    drawn = laplace_heads(stage, data, n_draws=100, seed=seed)
    new_users = Fit(FitConfig(k=2, router="none", dim=spec.dim), drawn.heads, {"logits": torch.zeros(2)})
    users_spec = PopulationSpec(k=2, reversed_heads=True, prompt_weight=0.0, n_pairs=4000, n_users=40,
                                test_fraction=0.0, **soft)
    users, truth = make_population(users_spec, seed)
    out = {}
    for n in (5, 20, 50):
        covered, width = [], []
        for user in sorted(set(users.user.tolist())):
            rows = np.flatnonzero(users.user == user)
            labelled, held = users.subset(rows[:n]), users.subset(rows[50:])
            post = weight_posterior(new_users, labelled, concentration=1.0, seed=seed)
            pred = predict_with_posterior(new_users, post, held, level)
            true = truth.prob(held).double()
            covered.append(((pred["low"] <= true) & (true <= pred["high"])).double().mean().item())
            width.append((pred["high"] - pred["low"]).mean().item())
        out[str(n)] = {"coverage": float(np.mean(covered)), "mean_width": float(np.mean(width)),
                       "users": len(covered)}
    return out


def active(seed: int, n_users: int = 20) -> dict:
    spec_a = PopulationSpec(k=2, reversed_heads=True, prompt_weight=1.0, n_pairs=4000)
    stage1 = fit(make_population(spec_a, seed)[0], k=2, router="prompt", restarts=1, alpha=0.0, seed=seed)
    spec = PopulationSpec(k=2, reversed_heads=True, prompt_weight=0.0, n_pairs=4000, n_users=40, test_fraction=0.0)
    data, _ = make_population(spec, seed)
    budgets = [1, 2, 3, 4, 6, 8, 12, 16]
    curves = {"eig": [], "random": []}
    for user in sorted(set(data.user.tolist()))[:n_users]:
        rows = np.flatnonzero(data.user == user)
        pool, held = data.subset(rows[:60]), data.subset(rows[60:])
        for strategy in curves:
            curve = active_curve(stage1, pool, held, budgets, strategy=strategy, seed=int(user[1:]))
            curves[strategy].append([curve[b] for b in budgets])
    return {"budgets": budgets, **{s: np.mean(v, 0).tolist() for s, v in curves.items()}, "users": n_users}


PARTS = {"routing": routing, "coverage": coverage, "active": active}


def run(seeds: int = 1, out_dir=None, parts: tuple[str, ...] = tuple(PARTS)) -> dict:
    """The ``parts`` (routing, coverage, active) on seeds 0 … seeds−1, one torch thread."""
    torch.set_num_threads(1)
    by_seed = {}
    for seed in range(seeds):
        by_seed[str(seed)] = {"seed": seed}
        for part in parts:
            start = time.perf_counter()
            by_seed[str(seed)][part] = PARTS[part](seed)
            log(f"routing_synthetic: seed {seed} {part} in {time.perf_counter() - start:.0f} s")
    return write_suite(out_dir, "routing_synthetic", {"seeds": seeds, "by_seed": by_seed},
                       [(f"Seed {seed}", json_block(result)) for seed, result in by_seed.items()])
