"""``synthetic``: every method against the oracle on populations with known truth (``bayesmicro.PopulationSpec``).

Per seed: one population (default: the built-in one — 3 heads, 300 users in 3 latent groups, a sharp router driven
mostly by the user's context), the same train/test split, features and budget for every method:

- ``oracle``: the true P(chosen ≻ rejected);
- ``single_bt``, ``static_mixture`` (MaxMin-style fixed weights), ``micro_stage1`` (prompt router, α = 0.5, the
  paper's stage 1), ``bayesmicro_context`` (router on [prompt; context], α = 0): ``bayesmicro.fit``, 2 restarts each (3 restarts put
  ``--seeds 3`` over ten minutes on a shared 2-core CPU);
- ``ensemble``: shared-base ensemble with frozen random prior heads (uniform weights); ``ensemble_hyre`` and
  ``micro_stage1_hyre``: HyRe test-time reweighting per group from ``budget`` labelled training pairs of that group;
- stage 2 on the ``micro_stage1`` heads with the user's context, from B labelled training pairs per latent group,
  B ∈ ``budgets`` (``bayesmicro.routing.route_predict``): ``hedge`` (MiCRo as published, paper Algorithm 1,
  τ = 1e-3), ``posterior`` (bayesmicro's posterior over the group's weights), ``amortized`` and ``hyre``; at
  B = ``budget`` the first two are also rows of the main table (``micro_hedge``, ``micro_posterior``); the curves
  are ``budget_curves.png``;
- K misspecified: ``bayesmicro_context`` with K_fit = K − 1 and K + 2.

Recovery: mean cosine between the true heads and the fitted heads after Hungarian alignment (only matched heads
count when K_fit < K), and the Pearson correlation between the fitted and the true π on held-out pairs (aligned).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro.bench.report import budget_curve_figure, log, markdown_table, mean_sd, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.alignment import cosine_matrix, match_heads
from bayesmicro.evaluate.baselines import BASELINE_FITS, fit_shared_base_ensemble, hyre_log_weights
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import mixture_prob
from bayesmicro.routing import budget_subset, route_predict

METHODS = ("oracle", "single_bt", "static_mixture", "ensemble", "ensemble_hyre", "micro_stage1",
           "micro_stage1_hyre", "micro_hedge", "micro_posterior", "bayesmicro_context")
ROUTING = ("hedge", "posterior", "amortized", "hyre")
BUDGETS = (10, 25, 50, 100)
HEDGE_TAU = 1e-3


def head_recovery(fitted: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    """Mean cosine between true heads (K, d) and their Hungarian-matched fitted heads (K_fit, d), over matched true
    heads; ``perm[j]`` is the fitted head matched to true head j (−1: unmatched)."""
    perm = match_heads(fitted, truth)
    cos = cosine_matrix(fitted, truth)
    matched = [float(cos[perm[j], j]) for j in range(truth.shape[0]) if perm[j] >= 0]
    return {"mean_cosine": float(np.mean(matched)), "matched": len(matched), "perm": perm.tolist()}


def router_recovery(fitted_log_w: torch.Tensor, true_log_w: torch.Tensor, perm: list[int]) -> float:
    """Pearson correlation of fitted π (columns reordered to the true heads) with the true π, over all (pair, head)
    entries of the matched heads. fitted_log_w: (n, K_fit); true_log_w: (n, K)."""
    cols = [j for j, p in enumerate(perm) if p >= 0]
    fitted = fitted_log_w.exp()[:, [perm[j] for j in cols]].flatten().double()
    true = true_log_w.exp()[:, cols].flatten().double()
    return float(torch.corrcoef(torch.stack([fitted, true]))[0, 1])


def hyre_by_group(margins_fn, train: EmbeddedPairs, test: EmbeddedPairs, budget: int, seed: int) -> torch.Tensor:
    """(n_test,) predictions with HyRe weights per group, each fitted on ``budget`` labelled training pairs of the
    group. ``margins_fn(pairs) -> (n, K)``."""
    rng = np.random.default_rng(seed)
    prob = torch.zeros(len(test))
    for g in sorted(set(test.group.tolist())):
        pool = np.flatnonzero(train.group == g)
        labelled = train.subset(rng.choice(pool, size=min(budget, pool.size), replace=False))
        log_w = hyre_log_weights(margins_fn(labelled))
        rows = np.flatnonzero(test.group == g)
        target = test.subset(rows)
        margins = margins_fn(target)
        prob[torch.from_numpy(rows)] = mixture_prob(log_w.expand_as(margins), margins).float()
    return prob


def per_head_accuracy(heads: torch.Tensor, test: EmbeddedPairs) -> tuple[np.ndarray, list[str]]:
    """(K, G) accuracy of each head alone (σ(Δ_k) > ½) on the held-out pairs of each group."""
    groups = sorted(set(test.group.tolist()))
    correct = (test.diff() @ heads.T > 0).double()  # (n, K)
    acc = np.stack([correct[torch.from_numpy(test.group == g)].mean(0).numpy() for g in groups], axis=1)
    return acc, groups


def stage2_curves(stage1: Fit, train: EmbeddedPairs, test: EmbeddedPairs, budgets: tuple[int, ...],
                  seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {str(B): score(...) + seconds}}: every ``ROUTING`` method on the frozen ``stage1`` heads, routed per
    latent group from B labelled training pairs of that group (the same pairs for every method)."""
    curves: dict[str, dict[str, dict[str, Any]]] = {method: {} for method in ROUTING}
    for b in budgets:
        labelled = budget_subset(train, b, seed=seed, by="group")
        for method in ROUTING:
            start = time.perf_counter()
            prob = route_predict(stage1, labelled, test, method, tau=HEDGE_TAU, seed=seed, by="group")
            curves[method][str(b)] = {**score(prob), "seconds": time.perf_counter() - start}
    return curves


def run_seed(spec: PopulationSpec, seed: int, budget: int, restarts: int,
             budgets: tuple[int, ...] = BUDGETS) -> dict[str, Any]:
    data, truth = make_population(spec, seed)
    train, test = data.part("train"), data.part("test")
    k = spec.k
    out: dict[str, Any] = {"seed": seed, "metrics": {}, "recovery": {}, "misspecified": {}, "seconds": {}}

    def record(name: str, prob: torch.Tensor, seconds: float) -> None:
        out["metrics"][name] = score(prob, test.group)
        out["seconds"][name] = seconds

    def timed_fit(**kw) -> tuple[Fit, float]:
        start = time.perf_counter()
        result = fit(data, seed=seed, restarts=restarts, **kw)
        log(f"synthetic: seed {seed} fit {kw} in {time.perf_counter() - start:.1f} s")
        return result, time.perf_counter() - start

    record("oracle", truth.prob(test), 0.0)
    fits: dict[str, Fit] = {}
    plans = {name: dict(k=k_fixed or k, router=router) for name, (k_fixed, router) in BASELINE_FITS.items()}
    plans["micro_stage1"]["alpha"] = 0.5  # the paper's α
    plans["bayesmicro_context"] = dict(k=k, router="context", alpha=0.0)
    for name, kw in plans.items():
        fits[name], seconds = timed_fit(**kw)
        record(name, fits[name].predict_proba(test), seconds)
    start = time.perf_counter()
    ensemble = fit_shared_base_ensemble(data, k, seed=seed)
    record("ensemble", ensemble.predict_proba(test), time.perf_counter() - start)
    record("ensemble_hyre", hyre_by_group(ensemble.margins, train, test, budget, seed), out["seconds"]["ensemble"])
    stage1 = fits["micro_stage1"]
    record("micro_stage1_hyre", hyre_by_group(lambda p: stage1.margins(p)[0], train, test, budget, seed),
           out["seconds"]["micro_stage1"])
    curve_budgets = tuple(sorted(set(budgets) | {budget}))
    out["stage2"] = stage2_curves(stage1, train, test, curve_budgets, seed)
    for name, method in (("micro_hedge", "hedge"), ("micro_posterior", "posterior")):
        at_budget = out["stage2"][method][str(budget)]
        out["metrics"][name] = {key: value for key, value in at_budget.items() if key != "seconds"}
        out["seconds"][name] = out["seconds"]["micro_stage1"] + at_budget["seconds"]

    true_log_w = truth.log_weights(test)
    for name in ("static_mixture", "micro_stage1", "bayesmicro_context"):
        rec = head_recovery(fits[name].heads[0], truth.heads)
        rec["router_corr"] = router_recovery(fits[name].log_weights(test), true_log_w, rec["perm"])
        out["recovery"][name] = rec
    out["recovery"]["ensemble"] = head_recovery(ensemble.heads, truth.heads)
    for k_fit in (k - 1, k + 2):
        if k_fit < 1:
            continue
        result, seconds = timed_fit(k=k_fit, router="context", alpha=0.0)
        rec = head_recovery(result.heads[0], truth.heads)
        rec["router_corr"] = router_recovery(result.log_weights(test), true_log_w, rec["perm"])
        out["misspecified"][f"k={k_fit}"] = {**score(result.predict_proba(test)), "k_fit": k_fit, **rec,
                                             "seconds": seconds}
    heads = fits["bayesmicro_context"].heads[0][torch.tensor(out["recovery"]["bayesmicro_context"]["perm"])]
    acc, groups = per_head_accuracy(heads, test)
    out["head_accuracy_by_group"] = {"heads_aligned_to_truth": acc.tolist(), "groups": groups}
    groups_log_w = fits["bayesmicro_context"].log_weights(test)[:, torch.tensor(out["recovery"]["bayesmicro_context"]
                                                                                 ["perm"])]
    out["router_by_group"] = {g: groups_log_w[torch.from_numpy(test.group == g)].exp().mean(0).tolist()
                              for g in groups}
    out["_plot"] = {"oracle": truth.prob(test), **{m: fits[m].predict_proba(test)
                                                   for m in ("single_bt", "micro_stage1", "bayesmicro_context")}}
    return out


def run(seeds: int = 5, out_dir: Path | str = "benchmarks/results/synthetic", spec: PopulationSpec = PopulationSpec(),
        budget: int = 50, restarts: int = 2, budgets: tuple[int, ...] = BUDGETS, **_: Any) -> dict[str, Any]:
    """Every method on ``seeds`` populations; writes results.json, results.md and four PNGs into ``out_dir``."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    per_seed = [run_seed(spec, seed, budget, restarts, tuple(budgets)) for seed in range(seeds)]
    plots = per_seed[0].pop("_plot")
    for s in per_seed[1:]:
        s.pop("_plot")
    summary = {m: {metric: mean_sd([s["metrics"][m][metric] for s in per_seed]) for metric in ("accuracy", "nll")}
               | {"fit_seconds": mean_sd([s["seconds"][m] for s in per_seed])} for m in METHODS}
    recovery = {m: {"head_cosine": mean_sd([s["recovery"][m]["mean_cosine"] for s in per_seed])}
                | ({"router_corr": mean_sd([s["recovery"][m]["router_corr"] for s in per_seed])}
                   if "router_corr" in per_seed[0]["recovery"][m] else {})
                for m in per_seed[0]["recovery"]}
    misspec = {key: {"k_fit": per_seed[0]["misspecified"][key]["k_fit"],
                     **{metric: mean_sd([s["misspecified"][key][metric] for s in per_seed])
                        for metric in ("accuracy", "nll", "mean_cosine", "router_corr")},
                     "matched_heads": per_seed[0]["misspecified"][key]["matched"]}
               for key in per_seed[0]["misspecified"]}
    misspec[f"k={spec.k}"] = {"k_fit": spec.k, **{m: summary["bayesmicro_context"][m] for m in ("accuracy", "nll")},
                              "mean_cosine": recovery["bayesmicro_context"]["head_cosine"],
                              "router_corr": recovery["bayesmicro_context"]["router_corr"], "matched_heads": spec.k}
    curve_budgets = sorted(int(b) for b in per_seed[0]["stage2"]["hedge"])
    stage2 = {method: {str(b): {metric: mean_sd([s["stage2"][method][str(b)][metric] for s in per_seed])
                                for metric in ("accuracy", "nll", "seconds")} for b in curve_budgets}
              for method in ROUTING}
    results = {"seeds": list(range(seeds)), "spec": asdict(spec), "budget_per_group": budget, "restarts": restarts,
               "hedge_tau": HEDGE_TAU, "budgets": curve_budgets, "summary": summary, "stage2": stage2,
               "recovery": recovery, "misspecified": misspec, "per_seed": per_seed,
               "seconds": time.perf_counter() - start}
    curve_rows = [{"method": method, **{f"B={b}": stage2[method][str(b)]["accuracy"] for b in curve_budgets}}
                  for method in ROUTING]
    rows = [{"method": m, **summary[m]} for m in METHODS]
    rec_rows = [{"method": m, **recovery[m]} for m in recovery]
    mis_rows = [{"K_fit": v["k_fit"], **v} for _, v in sorted(misspec.items(), key=lambda kv: kv[1]["k_fit"])]
    intro = (f"Population: {spec.n_pairs:,} pairs (test {spec.test_fraction:.0%}), d = {spec.dim}, K = {spec.k}, "
             f"{spec.n_users} users in {spec.k} latent groups. HyRe budget: {budget} labelled training pairs per "
             f"group; `micro_hedge` is MiCRo as published (stage-1 prompt router, then Hedge routing, paper "
             f"Algorithm 1, τ = {HEDGE_TAU:g}) and `micro_posterior` bayesmicro's posterior routing of the same "
             f"heads, both from {budget} labelled training pairs per group. Mean ± sd over {seeds} seeds. The paper "
             f"has no synthetic benchmark; its real-data numbers go beside the `hh`, `helpsteer2` and `rpr` suites.")
    sections = [("Held-out accuracy and NLL (nats) against the oracle",
                 intro + "\n\n" + markdown_table(rows, ["method", "accuracy", "nll", "fit_seconds"])),
                ("Stage 2 budget curves: held-out accuracy vs labelled pairs per group (B)",
                 "Heads frozen at `micro_stage1`; each method routes with the user's context from the same B "
                 "labelled training pairs per latent group.\n\n"
                 + markdown_table(curve_rows, ["method"] + [f"B={b}" for b in curve_budgets])),
                ("Recovery of the true heads (cosine after Hungarian alignment) and router (corr. of π)",
                 markdown_table(rec_rows, ["method", "head_cosine", "router_corr"])),
                ("K misspecified (router on context)",
                 markdown_table(mis_rows, ["K_fit", "accuracy", "nll", "mean_cosine", "router_corr",
                                           "matched_heads"]))]
    figures = {"budget_curves": _budget_curves(results), "head_specialisation": _heatmap(per_seed[0]),
               "router_weights": _router_plot(per_seed[0]), "reliability": _reliability(plots)}
    return write_suite(out_dir, "synthetic", results, sections, figures)


def _budget_curves(results: dict[str, Any]):
    """Accuracy vs B (mean ± sd over seeds) for every routing method, with the oracle and single-BT levels."""
    budgets = results["budgets"]
    curves = {method: tuple(np.array([curve[str(b)]["accuracy"][stat] for b in budgets]) for stat in ("mean", "sd"))
              for method, curve in results["stage2"].items()}
    levels = [(name, results["summary"][name]["accuracy"]["mean"]) for name in ("oracle", "micro_stage1", "single_bt")]
    return budget_curve_figure(budgets, curves, levels, "labelled pairs per group (B)", "held-out accuracy",
                               f"Stage 2 on the MiCRo stage-1 heads ({len(results['seeds'])} seeds)")


def _heatmap(seed0: dict[str, Any]):
    import matplotlib.pyplot as plt

    acc = np.asarray(seed0["head_accuracy_by_group"]["heads_aligned_to_truth"])
    groups = seed0["head_accuracy_by_group"]["groups"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yticks(range(acc.shape[0]), [f"head {j}" for j in range(acc.shape[0])])
    for (i, j), v in np.ndenumerate(acc):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    ax.set_title("Per-head accuracy by latent group (seed 0)")
    fig.colorbar(im, ax=ax)
    return fig


def _router_plot(seed0: dict[str, Any]):
    import matplotlib.pyplot as plt

    by_group = seed0["router_by_group"]
    groups = list(by_group)
    weights = np.asarray([by_group[g] for g in groups])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    bottom = np.zeros(len(groups))
    for j in range(weights.shape[1]):
        ax.bar(groups, weights[:, j], bottom=bottom, label=f"head {j}")
        bottom += weights[:, j]
    ax.set_ylabel("mean router weight π_k")
    ax.set_title("Router weights per group (context router, seed 0)")
    ax.legend(fontsize=7)
    return fig


def _reliability(probs: dict[str, torch.Tensor], bins: int = 10):
    """Observed frequency of 'chosen wins' is 1 for every pair, so reliability is drawn on the symmetrised pairs:
    each pair counted once as (p, 1) and once as (1 − p, 0)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    edges = np.linspace(0, 1, bins + 1)
    for name, p in probs.items():
        p = p.double().numpy()
        pred = np.concatenate([p, 1 - p])
        obs = np.concatenate([np.ones_like(p), np.zeros_like(p)])
        idx = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
        centers = [pred[idx == b].mean() for b in range(bins) if (idx == b).any()]
        freq = [obs[idx == b].mean() for b in range(bins) if (idx == b).any()]
        ax.plot(centers, freq, "o-", ms=3, label=name)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability (held-out, seed 0)")
    ax.legend(fontsize=7)
    return fig


__all__ = ["run", "run_seed", "stage2_curves", "head_recovery", "router_recovery", "hyre_by_group", "per_head_accuracy"]
