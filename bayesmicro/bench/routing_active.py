"""Active queries vs random choice for new users of a population whose context decides a reversed subgroup.

Per seed: a stage-1 mixture (K = 2, prompt router) is fitted on one population, then ``--users`` new users of a
second population (prompt weight 0: only the unseen context decides the user's head) each get a pool of 40 of their
pairs to be asked about and 40 held-out pairs. Active strategies ask greedily from the pool (the pool's orientation
is the user's answer); random choice asks in ``--random-orders`` random orders, averaged per user. Scores after each
budget: accuracy on the held-out labels, and the expected accuracy against the true P(chosen ≻ rejected) (no label
noise). The done-when of issue #5 compares active at B/2 with random at B, paired per user: mean ± standard error of
the difference over all users of all seeds.

    bayesmicro bench routing_active --seeds 3 --json   (both populations; ~25 min on 2 CPU cores)

The committed ``benchmarks/results/routing/active.{json,md}`` came from the script this suite replaced, one population
per run, merged (the same computation per population).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bayesmicro.bench.report import log, write_suite
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer.api import fit
from bayesmicro.methods import Acquisition
from bayesmicro.routing.active import active_curve

BUDGETS = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16]
POOL, HELD = 40, 40
POPULATIONS = {  # sharp: the default router (every user's π on a simplex corner); soft: π inside the simplex
    "sharp": dict(router_sharpness=8.0, context_noise=0.2),
    "soft": dict(router_sharpness=1.5, context_noise=0.5),
}


def user_curves(stage1, data, truth, user: str, strategies: list[str], random_orders: int) -> dict:
    """{strategy: {"accuracy": [...], "expected": [...]}} over BUDGETS for one user (random: mean over orders)."""
    rows = np.flatnonzero(data.user == user)
    pool, held = data.subset(rows[:POOL]), data.subset(rows[POOL:POOL + HELD])
    true_p = truth.prob(held).double()
    label_acc = lambda prob: float((prob > 0.5).double().mean())
    expected_acc = lambda prob: float(torch.where(prob > 0.5, true_p, 1 - true_p).mean())
    both = lambda prob: (label_acc(prob), expected_acc(prob))
    out = {"oracle": dict(zip(("accuracy", "expected"), both(true_p)))}
    for strategy in strategies:
        seeds = range(random_orders) if strategy == Acquisition.RANDOM else [0]
        runs = [active_curve(stage1, pool, held, BUDGETS, strategy=strategy, seed=1000 * s + int(user[1:]),
                             metric=both) for s in seeds]
        out[strategy] = {name: [float(np.mean([r[b][i] for r in runs])) for b in BUDGETS]
                         for i, name in enumerate(("accuracy", "expected"))}
    return out


def run_seed(population: str, seed: int, n_users: int, strategies: list[str], random_orders: int,
             restarts: int) -> list[dict]:
    settings = POPULATIONS[population]
    spec_a = PopulationSpec(k=2, reversed_heads=True, prompt_weight=1.0, n_pairs=4000, **settings)
    stage1 = fit(make_population(spec_a, seed)[0], k=2, router="prompt", restarts=restarts, alpha=0.0, seed=seed)
    spec = PopulationSpec(k=2, reversed_heads=True, prompt_weight=0.0, n_pairs=n_users * 3 * (POOL + HELD),
                          n_users=n_users * 3, test_fraction=0.0, **settings)
    data, truth = make_population(spec, seed)  # same seed: the same heads and group contexts as stage 1
    counts = {u: int((data.user == u).sum()) for u in sorted(set(data.user.tolist()))}
    users = [u for u, c in counts.items() if c >= POOL + HELD][:n_users]
    return [{**user_curves(stage1, data, truth, u, strategies, random_orders), "seed": seed} for u in users]


def summarise(curves: list[dict], strategies: list[str]) -> dict:
    """Mean ± SE per budget per strategy, and active(B/2) − random(B) paired per user for B = 2, 4, …"""
    out = {"budgets": BUDGETS, "users": len(curves), "curves": {}, "half_budget": {}, "per_seed": {}}
    for seed in sorted({c["seed"] for c in curves}):  # the truth's own accuracy and each strategy at the largest B
        mine = [c for c in curves if c["seed"] == seed]
        out["per_seed"][str(seed)] = {"users": len(mine), **{
            metric: {"oracle": float(np.mean([c["oracle"][metric] for c in mine])),
                     **{f"{s}_at_{BUDGETS[-1]}": float(np.mean([c[s][metric][-1] for c in mine])) for s in strategies}}
            for metric in ("accuracy", "expected")}}
    for strategy in strategies:
        out["curves"][strategy] = {}
        for metric in ("accuracy", "expected"):
            values = np.array([c[strategy][metric] for c in curves])
            out["curves"][strategy][metric] = {"mean": values.mean(0).tolist(),
                                               "se": (values.std(0, ddof=1) / np.sqrt(len(values))).tolist()}
    for strategy in (s for s in strategies if s != "random"):
        out["half_budget"][strategy] = {}
        for metric in ("accuracy", "expected"):
            rows = []
            for b in (b for b in BUDGETS if b % 2 == 0 and b // 2 in BUDGETS):
                diff = np.array([c[strategy][metric][BUDGETS.index(b // 2)] - c["random"][metric][BUDGETS.index(b)]
                                 for c in curves])
                se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
                rows.append({"B": b, "active_at_half": float(np.mean([c[strategy][metric][BUDGETS.index(b // 2)]
                                                                      for c in curves])),
                             "random_at_B": float(np.mean([c["random"][metric][BUDGETS.index(b)] for c in curves])),
                             "diff": float(diff.mean()), "se": se, "reached": bool(diff.mean() >= -1e-12),
                             "reached_within_2se": bool(diff.mean() >= -2 * se)})
            out["half_budget"][strategy][metric] = rows
    return out


def markdown(results: dict[str, dict]) -> str:
    """The budget curves and the half-budget comparison of every population as Markdown tables."""
    lines = ["# Active queries vs random choice (issue #5)", "",
             "Done-when: active queries reach the random-choice accuracy with at most half the labels. Each row "
             "compares active at B/2 with random at B, paired per user: mean difference ± standard error over all "
             "users of all seeds (`reached`: difference ≥ 0; `within 2 SE`: difference ≥ −2 SE). `accuracy` is on "
             "the 40 held-out labels of each user; `expected` is the expected accuracy against the true "
             "P(chosen ≻ rejected) (no label noise).", ""]
    for name, r in results.items():
        spec = f"router sharpness {r['settings']['router_sharpness']}, context noise {r['settings']['context_noise']}"
        lines += [f"## Population `{name}` ({spec}), seeds {r['seeds']}, {r['users']} users "
                  f"({r['users_per_seed']} per seed), pool {r['pool']}, {r['random_orders']} random orders per user",
                  "", f"`{r['command']}` ({r['seconds']:.0f} s)", ""]
        strategies = list(r["curves"])
        last = r["budgets"][-1]
        lines += [f"Per seed, held-out accuracy of the oracle (the true P(chosen ≻ rejected)) and of each strategy at "
                  f"B = {last} (the gap to the oracle is stage 1's heads):", "",
                  "| seed | users | oracle | " + " | ".join(f"{s} at {last}" for s in strategies) + " |",
                  "|---" * (len(strategies) + 3) + "|"]
        lines += [f"| {seed} | {v['users']} | {v['accuracy']['oracle']:.4f} | " + " | ".join(
            f"{v['accuracy'][f'{s}_at_{last}']:.4f}" for s in strategies) + " |" for seed, v in r["per_seed"].items()]
        lines.append("")
        lines += ["Held-out accuracy, mean ± SE over users:", ""]
        lines += ["| B | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 1) + "|"]
        for i, b in enumerate(r["budgets"]):
            cells = [f"{r['curves'][s]['accuracy']['mean'][i]:.4f} ± {r['curves'][s]['accuracy']['se'][i]:.4f}"
                     for s in strategies]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        lines.append("")
        for strategy, metrics in r["half_budget"].items():
            for metric, rows in metrics.items():
                lines += [f"{strategy} at B/2 vs random at B ({metric}):", "",
                          "| B | active at B/2 | random at B | difference ± SE | reached | within 2 SE |",
                          "|---|---|---|---|---|---|"]
                lines += [f"| {x['B']} | {x['active_at_half']:.4f} | {x['random_at_B']:.4f} | "
                          f"{x['diff']:+.4f} ± {x['se']:.4f} | {'yes' if x['reached'] else 'NO'} | "
                          f"{'yes' if x['reached_within_2se'] else 'NO'} |" for x in rows]
                lines.append("")
    return "\n".join(lines)


def run(seeds: int = 3, out_dir=None, populations: tuple[str, ...] = ("sharp", "soft"), users: int = 150,
        strategies: tuple[str, ...] = ("epig", "eer", "eig", "random"), random_orders: int = 2,
        stage1_restarts: int = 3) -> dict:
    """Each population on seeds 0 … seeds−1, ``users`` new users per seed, one torch thread. ``stage1_restarts``: 1
    left seed 2 of the sharp population at a bad optimum (0.53 accuracy against an oracle's 0.88)."""
    torch.set_num_threads(1)
    results = {}
    for population in populations:
        start = time.perf_counter()
        curves = []
        for seed in range(seeds):
            curves += run_seed(population, seed, users, list(strategies), random_orders, stage1_restarts)
            log(f"routing_active: {population} seed {seed} done at {time.perf_counter() - start:.0f} s")
        results[population] = {
            "population": population, "settings": POPULATIONS[population], "seeds": list(range(seeds)),
            "users_per_seed": users, "stage1_restarts": stage1_restarts, "pool": POOL, "held_out": HELD,
            "random_orders": random_orders, "seconds": time.perf_counter() - start,
            **summarise(curves, list(strategies)),
            "command": f"bayesmicro bench routing_active --seeds {seeds}"}
    text = markdown(results).split("\n", 2)[2]  # without its page title: write_suite heads the page
    return write_suite(out_dir, "routing_active", {"seeds": seeds, "populations": results},
                       [("Active queries vs random choice (issue #5)", text)])
