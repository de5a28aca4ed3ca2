"""ArviZ export, PSIS-LOO, choosing K by ``az.compare`` and merging heads whose predictions correlate.

InferenceData is built with ``from_dict`` from the summed-out model (``Fit.pointwise_log_lik``), never
``from_pyro`` (MCMC-only, and it scores enumerated models wrongly). ArviZ 0.23 takes the groups as keyword
arguments; ArviZ ≥ 1 (a DataTree) takes one dict of groups and renames some ELPD fields — both are handled here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate.alignment import align_draws
from bayesmicro.infer.capacity import SMALL_ELPD_DIFF  # one "small elpd difference" for every K rule
from bayesmicro.infer.result import Fit
from bayesmicro.methods import KCriterion, RouterPosterior

PARETO_K_GOOD, PARETO_K_BAD = 0.5, 0.7
# built-in population, seeds 0-2: the pairs above 0.7 at 4 000 draws were all below it at 16 000 (max 0.65)
REDRAW_FACTOR = 4
# `--router-prior-scale auto` tries these: 0.03 keeps a router near uniform weights, 1.0 lets one memorise pairs
ROUTER_PRIOR_SCALES = (0.03, 0.1, 0.3, 1.0)


def smallest_adequate_k(table: dict[str, dict], ks: Sequence[int]) -> int:
    """The smallest K whose elpd difference to the best model is negligible: ≤ max(4, dse)."""
    return min(k for k in ks if table[f"k={k}"]["elpd_diff"] <= max(SMALL_ELPD_DIFF, table[f"k={k}"]["dse"]))


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def arviz_major() -> int:
    return int(_az().__version__.split(".")[0])


def n_chains(fit: Fit) -> int:
    """Chains behind the fit's draws, concatenated chain by chain (``summary[inference]["chains"]``: NUTS's, the
    refined VI's HMC chains) when every chain kept as many draws; else 1."""
    chains = (fit.summary.get(fit.config.inference) or {}).get("chains", 1) if isinstance(fit.summary, dict) else 1
    return chains if isinstance(chains, int) and chains >= 1 and fit.n_draws % chains == 0 else 1


def to_inference_data(fit: Fit, data: EmbeddedPairs, log_lik: torch.Tensor | None = None):
    """InferenceData (ArviZ 0.x) / DataTree (ArviZ 1.x) with groups posterior (heads aligned across draws,
    (chain=C, draw=S/C, head=K, feature=d); C = ``n_chains``), log_likelihood (``obs``: (C, S/C, pair=n)) and
    observed_data (all 1: the chosen response won). With several chains ArviZ's R̂ (``az.rhat``) is meaningful.
    ``log_lik``: (S, n) stored in place of the fit's pointwise log-likelihood on ``data`` — minus other log
    importance weights, whose Pareto k̂ ``az.loo`` then reports."""
    az = _az()
    chains = n_chains(fit)

    def by_chain(x: torch.Tensor) -> np.ndarray:
        return x.double().numpy().reshape(chains, x.shape[0] // chains, *x.shape[1:])

    heads = align_draws(fit.heads) if fit.n_draws > 1 else fit.heads
    posterior = {"heads": by_chain(heads)}
    for key, value in fit.router_draws.items():
        posterior[f"router.{key}"] = by_chain(value)
    log_lik = {"obs": by_chain(fit.pointwise_log_lik(data) if log_lik is None else log_lik)}
    observed = {"obs": np.ones(len(data))}
    dims = {"heads": ["head", "feature"], "obs": ["pair"]}
    coords = {"head": np.arange(fit.config.k), "feature": np.arange(fit.config.dim), "pair": np.arange(len(data))}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="More chains")  # the refined VI: many short chains, as meant
        if arviz_major() >= 1:
            return az.from_dict({"posterior": posterior, "log_likelihood": log_lik, "observed_data": observed},
                                dims=dims, coords=coords)
        return az.from_dict(posterior=posterior, log_likelihood=log_lik, observed_data=observed, dims=dims,
                            coords=coords)


def loo(fit: Fit, data: EmbeddedPairs) -> dict:
    """PSIS-LOO on ``data`` (the pairs the posterior was fitted to): elpd_loo, se, p_loo and Pareto-k counts."""
    if fit.n_draws < 2:
        raise ValueError("PSIS-LOO needs posterior draws; fit with inference 'vi' or 'nuts'")
    return loo_summary(to_inference_data(fit, data))


def loo_summary(idata) -> dict:
    """``az.loo`` of one InferenceData/DataTree as a plain dict, the same on ArviZ 0.x and 1.x (1.x renames
    ``elpd_loo`` → ``elpd`` and ``p_loo`` → ``p``)."""
    return _loo_result(idata)[0]


def _loo_result(idata) -> tuple[dict, np.ndarray | None, np.ndarray]:
    """(summary, pointwise elpd_i (n,) or None where the result has none, Pareto k (n,)) of ``az.loo``."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = az.loo(idata, pointwise=True)
    pareto_k = np.asarray(getattr(result, "pareto_k")).ravel()
    elpd = getattr(result, "elpd_loo", None)
    p_loo = getattr(result, "p_loo", None)
    pointwise = getattr(result, "loo_i", None)  # ArviZ 1.x: elpd_i
    pointwise = getattr(result, "elpd_i", None) if pointwise is None else pointwise
    summary = {
        "elpd_loo": float(result.elpd if elpd is None else elpd), "se": float(result.se),
        "p_loo": float(result.p if p_loo is None else p_loo), "n": int(pareto_k.size),
        "pareto_k": {"good": int((pareto_k <= PARETO_K_GOOD).sum()),
                     "ok": int(((pareto_k > PARETO_K_GOOD) & (pareto_k <= PARETO_K_BAD)).sum()),
                     "bad": int((pareto_k > PARETO_K_BAD).sum()), "max": float(pareto_k.max())},
    }
    return summary, None if pointwise is None else np.asarray(pointwise, dtype=float).ravel(), pareto_k


def reloo(fit: Fit, data: EmbeddedPairs, refit: Callable[[EmbeddedPairs], Fit] | None = None,
          threshold: float = PARETO_K_BAD, max_refits: int = 10, redraw_factor: int = REDRAW_FACTOR,
          redraw: Callable[[int], Fit] | None = None, idata=None,
          mixture: Callable[[int], Fit] | None = None) -> dict:
    """PSIS-LOO with exact refits where importance sampling is unreliable (ArviZ's and brms's ``reloo``).

    ``data``: the pairs the posterior was fitted to (a training part, no held-out rows). First, where the run can be
    replayed with more draws of the same posterior (``Fit.replayable_draws``: the linearised VI / Laplace), pairs
    whose Pareto k exceeds ``threshold`` get PSIS again on ``redraw_factor`` × as many draws (``redraw(n)``;
    default: the run replayed with n draws). k̂ describes the importance ratios' tail as seen from S draws; with a
    Gaussian θ their logarithm is nearly linear in θ, so the tail thins as S grows: on the built-in population every
    pair above 0.7 at 4 000 Laplace draws was below it at 16 000. A refined VI run (HMC on the exact posterior, whose
    ratios stay heavy-tailed at any draw count) instead replays its chains on the mixture of the leave-one-out
    posteriors for ``redraw_factor`` × its draws (``mixture(n)``) and scores those pairs by mixture importance
    sampling (``mixture_is_loo``), their k the mixture weights'.
    Then the pairs still above ``threshold``
    (the worst ``max_refits``) are scored exactly: the model is refitted without pair i (``refit``; default
    ``infer.api.refit_like``, the run's recorded settings) and elpd_i = log mean_s p(y_i | θ_s⁽⁻ⁱ⁾). The summary's
    elpd_loo, se and p_loo use the final values; ``pareto_k`` keeps the counts at the run's draws; ``redraw`` (when
    one was made) lists each re-estimated pair (index, k and elpd_i at both draw counts) and how many stay above,
    ``mixture_is`` the same for the mixture estimator (and its elpd_loo over every pair);
    ``reloo`` lists each refitted pair (index, k, PSIS and exact elpd_i) and ``unreliable`` counts the pairs left
    above the threshold without a refit. ``idata``: ``to_inference_data(fit, data)`` when the caller has it already.
    """
    from bayesmicro.infer.api import refit_like

    if fit.n_draws < 2:
        raise ValueError("PSIS-LOO needs posterior draws; fit with inference 'vi' or 'nuts'")
    if data.split is not None and "test" in set(data.split.tolist()):
        raise ValueError("reloo needs the pairs the posterior was fitted to: pass the training part")
    refit = refit or (lambda pairs: refit_like(fit, pairs))
    summary, pointwise, pareto_k = _loo_result(to_inference_data(fit, data) if idata is None else idata)
    if pointwise is None and bool((pareto_k > threshold).any()):
        raise RuntimeError("this ArviZ version's loo result has no pointwise elpd to correct")
    final_k, final = pareto_k.copy(), None if pointwise is None else pointwise.copy()
    flagged = redraw_factor > 1 and bool((final_k > threshold).any())
    if flagged and (mixture is not None or (redraw is None and fit.router_posterior == RouterPosterior.REFINED)):
        mixture = mixture or (lambda n: refit_like(fit, data, draws=n, refine_target="loo_mixture"))
        summary["mixture_is"] = _mixture_is_on_more_draws(mixture, fit.n_draws * redraw_factor, data, final, final_k,
                                                          threshold)
    elif flagged and (redraw is not None or fit.replayable_draws):
        redraw = redraw or (lambda n: refit_like(fit, data, draws=n))
        summary["redraw"] = _psis_on_more_draws(redraw, fit.n_draws * redraw_factor, data, final, final_k, threshold)
    worst = [int(i) for i in np.argsort(-final_k) if final_k[i] > threshold][:max(0, max_refits)]
    refitted = []
    for i in worst:
        keep = np.delete(np.arange(len(data)), i)
        left_out = refit(data.subset(keep)).pointwise_log_lik(data.subset([i])).double()[:, 0]
        exact = float(torch.logsumexp(left_out, 0) - np.log(left_out.numel()))
        refitted.append({"pair": i, "pareto_k": float(final_k[i]), "elpd_psis": float(final[i]),
                         "elpd_exact": exact})
        final[i] = exact
    if final is not None and not np.array_equal(final, pointwise):
        lppd = summary["elpd_loo"] + summary["p_loo"]  # ArviZ's p_loo = lppd − elpd_loo
        summary["elpd_loo"] = float(final.sum())
        summary["se"] = float(np.sqrt(final.size * final.var()))
        summary["p_loo"] = lppd - summary["elpd_loo"]
    summary["reloo"] = {"threshold": threshold, "refitted": refitted,
                        "unreliable": int((final_k > threshold).sum()) - len(refitted)}
    return summary


def _psis_on_more_draws(redraw: Callable[[int], Fit], draws: int, data: EmbeddedPairs, pointwise: np.ndarray,
                        pareto_k: np.ndarray, threshold: float) -> dict:
    """PSIS of the pairs above ``threshold`` on ``redraw(draws)``'s draws, written into ``pointwise`` (n,) elpd_i and
    ``pareto_k`` (n,). Returns {draws, pairs: [{pair, pareto_k, pareto_k_redrawn, elpd_psis, elpd_redrawn}],
    still_above}."""
    flagged = np.flatnonzero(pareto_k > threshold)
    _, elpd, k = _loo_result(to_inference_data(redraw(draws), data.subset(flagged)))
    rows = [{"pair": int(i), "pareto_k": float(pareto_k[i]), "pareto_k_redrawn": float(k[j]),
             "elpd_psis": float(pointwise[i]), "elpd_redrawn": float(elpd[j])} for j, i in enumerate(flagged)]
    pointwise[flagged], pareto_k[flagged] = elpd, k
    return {"draws": draws, "pairs": rows, "still_above": int((pareto_k > threshold).sum())}


def mixture_is_loo(log_lik: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture importance-sampling LOO (Silva & Zanella 2023) from S draws of the mixture of the n leave-one-out
    posteriors, q_mix(θ) ∝ p(θ | D) Σ_j 1 / p(y_j | θ).

    log_lik: (S, n) log p(y_i | θ_s) of every pair of D at those draws. Returns (elpd_i (n,), log v (S, n)):
    elpd_i = log Σ_s a_s − log Σ_s a_s / p(y_i | θ_s), a_s = 1 / Σ_j p(y_j | θ_s)⁻¹, where v_si = a_s / p(y_i | θ_s)
    ≤ 1 are the self-normalised weights from q_mix to the posterior without pair i. Bounded weights give the
    estimator a finite variance where PSIS's ratios 1 / p(y_i | θ) from the full posterior have heavy tails."""
    ll = log_lik.double()
    log_a = -torch.logsumexp(-ll, 1)  # (S,)
    log_v = log_a[:, None] - ll
    return torch.logsumexp(log_a, 0) - torch.logsumexp(log_v, 0), log_v


def _mixture_is_on_more_draws(mixture: Callable[[int], Fit], draws: int, data: EmbeddedPairs,
                              pointwise: np.ndarray, pareto_k: np.ndarray, threshold: float) -> dict:
    """``mixture_is_loo`` of the pairs above ``threshold`` on ``mixture(draws)``'s draws of q_mix, written into
    ``pointwise`` (n,) elpd_i and ``pareto_k`` (n,) (the Pareto k̂ of their weights v). Returns {draws, pairs:
    [{pair, pareto_k, pareto_k_mixture, elpd_psis, elpd_mixture}], still_above, elpd_loo_mixture (every pair)}."""
    flagged = np.flatnonzero(pareto_k > threshold)
    mixed = mixture(draws)
    elpd, log_v = mixture_is_loo(mixed.pointwise_log_lik(data))
    _, _, k = _loo_result(to_inference_data(mixed, data.subset(flagged), log_lik=-log_v[:, flagged]))
    elpd = elpd.numpy()
    rows = [{"pair": int(i), "pareto_k": float(pareto_k[i]), "pareto_k_mixture": float(k[j]),
             "elpd_psis": float(pointwise[i]), "elpd_mixture": float(elpd[i])} for j, i in enumerate(flagged)]
    pointwise[flagged], pareto_k[flagged] = elpd[flagged], k
    return {"draws": draws, "pairs": rows, "still_above": int((pareto_k > threshold).sum()),
            "elpd_loo_mixture": float(elpd.sum())}


def compare(fits: dict[str, Fit], data: EmbeddedPairs) -> dict[str, dict]:
    """``az.compare`` (PSIS-LOO) of several fits on the same pairs: {name: {rank, elpd_loo, elpd_diff, dse, weight}}."""
    return compare_table({name: to_inference_data(f, data) for name, f in fits.items()})


def compare_table(idatas: dict) -> dict[str, dict]:
    """``az.compare`` of InferenceData/DataTrees as {name: {rank, elpd_loo, elpd_diff, dse, weight}}, the same on
    ArviZ 0.x and 1.x: elpd_diff is the best model's elpd minus this one's (≥ 0; 1.x reports it negated), values
    unrounded (1.x rounds unless told not to)."""
    az = _az()
    options = {"ic": "loo"} if arviz_major() < 1 else {"round_to": "none"}
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
