"""Model comparison and capacity choice: ``az.compare`` tables, held-out elpd, choosing K (``auto_k``, ``choose_k``)
and the router's prior scale, and merging heads whose predictions correlate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate import arviz as _export
from bayesmicro.evaluate.arviz import to_inference_data
from bayesmicro.infer.capacity import SMALL_ELPD_DIFF  # one "small elpd difference" for every K rule
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import KCriterion

# `--router-prior-scale auto` tries these: 0.03 keeps a router near uniform weights, 1.0 lets one memorise pairs
ROUTER_PRIOR_SCALES = (0.03, 0.1, 0.3, 1.0)


def smallest_adequate_k(table: dict[str, dict], ks: Sequence[int]) -> int:
    """The smallest K whose elpd difference to the best model is negligible: ≤ max(4, dse)."""
    return min(k for k in ks if table[f"k={k}"]["elpd_diff"] <= max(SMALL_ELPD_DIFF, table[f"k={k}"]["dse"]))


def compare(fits: dict[str, Fit], data: EmbeddedPairs) -> dict[str, dict]:
    """``az.compare`` (PSIS-LOO) of several fits on the same pairs: {name: {rank, elpd_loo, elpd_diff, dse, weight}}."""
    return compare_table({name: to_inference_data(f, data) for name, f in fits.items()})


def compare_table(idatas: dict) -> dict[str, dict]:
    """``az.compare`` of InferenceData/DataTrees as {name: {rank, elpd_loo, elpd_diff, dse, weight}}, the same on
    ArviZ 0.x and 1.x: elpd_diff is the best model's elpd minus this one's (≥ 0; 1.x reports it negated), values
    unrounded (1.x rounds unless told not to)."""
    az = _export._az()
    options = {"ic": "loo"} if _export.arviz_major() < 1 else {"round_to": "none"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(idatas, **options)
    elpd_col = "elpd_loo" if "elpd_loo" in table.columns else "elpd"
    best = float(table[elpd_col].max())
    return {str(name): {"rank": int(row["rank"]), "elpd_loo": float(row[elpd_col]),
                        "elpd_diff": best - float(row[elpd_col]), "dse": float(row["dse"]),
                        "weight": float(row["weight"])}
            for name, row in table.iterrows()}


def choose_k(fit_k: Callable[[int], Fit], data: EmbeddedPairs, k_max: int = 5,
             k_values: Sequence[int] | None = None) -> tuple[int, dict[int, Fit], dict]:
    """Fit K = 1..k_max with ``fit_k(K)`` (posterior draws needed) and pick K by PSIS-LOO on ``data``.

    Rule (``smallest_adequate_k``): the smallest K whose elpd_loo is within max(4, dse) of the best model's —
    extra heads that do not clearly improve predictive density are not kept.
    Returns (K, {K: Fit}, {"compare": az.compare table, "rule": ...}).
    """
    ks = list(k_values or range(1, k_max + 1))
    fits = {k: fit_k(k) for k in ks}
    table = compare({f"k={k}": f for k, f in fits.items()}, data)
    chosen = smallest_adequate_k(table, ks)
    return chosen, fits, {"compare": table, "rule": "smallest K with elpd_diff ≤ max(4, dse)", "k": chosen}


def head_correlation(fit: Fit, data: EmbeddedPairs) -> torch.Tensor:
    """(K, K) correlation across pairs of the heads' posterior-mean preference probabilities σ(Δ_k)."""
    probs = torch.sigmoid(fit.margins(data)).mean(0).double()  # (n, K)
    return torch.corrcoef(probs.T) if fit.config.k > 1 else torch.ones(1, 1, dtype=torch.float64)


def merge_correlated_heads(fit: Fit, data: EmbeddedPairs, threshold: float = 0.95) -> tuple[list[list[int]], Fit]:
    """Group heads whose predictions correlate above ``threshold`` (transitively) — the paper's remedy for a K that
    is too large. Returns (groups, a Fit in which every head of a group is replaced by the group's router-weighted
    mean head, draw by draw). Refit with K = len(groups) for a smaller model."""
    corr = head_correlation(fit, data)
    k = fit.config.k
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(k):
        for j in range(i + 1, k):
            if corr[i, j] > threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(root(i), []).append(i)
    groups_list = sorted(groups.values())
    weight = fit.log_weights(data).exp().mean(0)  # (K,) average router weight of each head
    heads = fit.heads.clone()
    for members in groups_list:
        w = weight[members] / weight[members].sum()
        heads[:, members] = (fit.heads[:, members] * w[None, :, None]).sum(1, keepdim=True)
    merged = Fit(fit.config, heads, fit.router_state, {**fit.summary, "merged_groups": groups_list},
                 fit.router_draws)
    return groups_list, merged


def holdout_compare(fits: dict[str, Fit], test: EmbeddedPairs) -> dict[str, dict]:
    """The ``compare`` table computed on held-out pairs: elpd = Σ_i log mean_s p_s(i), elpd_diff to the best,
    dse = √n · sd of the pointwise differences (as ``az.compare``), rank. Weight is omitted (None)."""
    import math

    pointwise = {name: (torch.logsumexp(f.pointwise_log_lik(test).double(), 0) - math.log(f.n_draws))
                 for name, f in fits.items()}
    best = max(pointwise, key=lambda name: float(pointwise[name].sum()))
    order = sorted(pointwise, key=lambda name: -float(pointwise[name].sum()))
    n = len(test)
    return {name: {"rank": order.index(name), "elpd_loo": float(pointwise[name].sum()),
                   "elpd_diff": float((pointwise[best] - pointwise[name]).sum()),
                   "dse": float((pointwise[best] - pointwise[name]).std() * math.sqrt(n)) if name != best else 0.0,
                   "weight": None}
            for name in pointwise}


def auto_k(data: EmbeddedPairs, k_max: int = 5, router: str = "context", criterion: str = "holdout",
           seed: int = 0, restarts: int = 2, prior_scale: float = 1.0, alpha: float = 0.0,
           holdout_fraction: float = 0.3, hidden: int = 128, router_prior_scale: float = 0.3) -> tuple[int, dict]:
    """Choose K = 1..k_max for ``data``; rule: the smallest K whose elpd is within max(4, dse) of the best.

    ``criterion``:
    - ``holdout`` (default): MAP fits with ``router`` on the training pairs, elpd on the held-out pairs (the test
      split, or ``holdout_fraction`` of the pairs). Honest for routed mixtures, whose point-estimated router is
      fitted to the training pairs and therefore not penalised by PSIS-LOO.
    - ``loo``: PSIS-LOO via ``az.compare`` over VI fits on the training pairs. Measured: with mean-field VI draws
      p_loo is underestimated for redundant heads, so LOO tends to prefer too many heads.
    """
    from bayesmicro.infer.api import fit
    from bayesmicro.infer.vi import VISchedule

    if criterion not in tuple(KCriterion):
        raise ValueError(f"criterion must be holdout or loo, got {criterion!r}")
    train, test = _holdout_parts(data, holdout_fraction, seed)
    ks = list(range(1, k_max + 1))
    common = dict(router=router, alpha=alpha, restarts=restarts, seed=seed, prior_scale=prior_scale, hidden=hidden,
                  router_prior_scale=router_prior_scale)
    if criterion == KCriterion.LOO:
        schedule = VISchedule(steps=300, particles=1, draws=200, laplace_draws=1000, router_posterior="linearised")
        k, _, info = choose_k(lambda k: fit(train, k=k, inference="vi", vi=schedule, **common), train, k_max=k_max)
        return k, {**info, "criterion": "loo"}
    fits = {f"k={k}": fit(train, k=k, inference="map", **common) for k in ks}
    table = holdout_compare(fits, test)
    chosen = smallest_adequate_k(table, ks)
    return chosen, {"compare": table, "rule": "smallest K with elpd_diff ≤ max(4, dse)", "k": chosen,
                    "criterion": "holdout", "holdout_pairs": len(test)}


def auto_router_prior_scale(data: EmbeddedPairs, k: int, router: str = "prompt",
                            scales: Sequence[float] = ROUTER_PRIOR_SCALES, seed: int = 0, restarts: int = 2,
                            prior_scale: float = 1.0, alpha: float = 0.5, holdout_fraction: float = 0.3,
                            hidden: int = 128) -> tuple[float, dict]:
    """Choose the sd of the router network's Gaussian prior among ``scales``: MAP fits with each on the training
    pairs, elpd on the held-out pairs (the test split, or ``holdout_fraction`` of the pairs); the largest wins.

    Why held-out and not the training fit: a weak prior lets the router memorise which head explains each
    training pair — the training likelihood rises while held-out prompts are routed at chance (the ``hh`` suite).
    """
    from bayesmicro.infer.api import fit

    train, test = _holdout_parts(data, holdout_fraction, seed)
    common = dict(k=k, router=router, alpha=alpha, restarts=restarts, seed=seed, prior_scale=prior_scale,
                  hidden=hidden, inference="map")
    fits = {f"scale={s}": fit(train, router_prior_scale=s, **common) for s in scales}
    table = holdout_compare(fits, test)
    chosen = min(scales, key=lambda s: table[f"scale={s}"]["rank"])
    return chosen, {"compare": table, "rule": "largest held-out elpd", "router_prior_scale": chosen,
                    "holdout_pairs": len(test)}


def _holdout_parts(data: EmbeddedPairs, holdout_fraction: float, seed: int) -> tuple[EmbeddedPairs, EmbeddedPairs]:
    """(train, held-out) pairs: the test split, or a random ``holdout_fraction`` when there is none."""
    if data.split is None or "test" not in set(data.split.tolist()):
        data = data.with_split(holdout_fraction, seed)
    return data.part("train"), data.part("test")
