"""PSIS-LOO of a fit's posterior draws: the summary, exact refits or more draws for the pairs whose Pareto k̂ is
high (``reloo``), and mixture importance sampling (``mixture_is_loo``). ArviZ is reached through ``evaluate.arviz``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate import arviz as _export
from bayesmicro.evaluate.arviz import to_inference_data
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import RouterPosterior

PARETO_K_GOOD, PARETO_K_BAD = 0.5, 0.7

# built-in population, seeds 0-2: the pairs above 0.7 at 4 000 draws were all below it at 16 000 (max 0.65)
REDRAW_FACTOR = 4


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
    az = _export._az()
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
