"""``bayesmicro fit DATA --format comparisons``: the per-user latent class BT mixture on a paired-comparison table."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bayesmicro._io import atomic_dir, write_json
from bayesmicro.cli.common import emit_json, print_table, set_threads, stderr
from bayesmicro.data.protocols.comparisons import load_comparisons
from bayesmicro.errors import BadInput
from bayesmicro.infer.latent_class import bic, fit_latent_class, n_parameters
from bayesmicro.infer.results.latent_class import LatentClassResult


def fit_comparisons(data: Path, *, item1_col: str, item2_col: str, outcome_col: str, user_col: str,
                    context_cols: str, latent: str, k: int | str, restarts: int, seed: int, out: Path | None,
                    as_json: bool, threads: int | None, k_max: int = 5, overwrite: bool = False) -> dict:
    """Fit K latent classes of users (all of a user's comparisons share one class; the router is a multinomial
    logit on the user's covariates) by EM; report the maximised log-likelihood (natural log, ties excluded).
    ``k='auto'``: K = 1..``k_max`` by the lowest BIC."""
    auto = str(k).strip().lower() == "auto"
    if auto and k_max < 1:
        raise BadInput(f"--k-max must be ≥ 1, got {k_max}")
    if not auto:
        try:
            k = int(k)
        except ValueError:
            raise BadInput(f"--k must be a whole number of classes or 'auto' with --format comparisons, got {k!r}") \
                from None
    if latent != "user":
        raise BadInput(f"--latent must be 'user' with --format comparisons, got {latent!r}")
    cols = [c.strip() for c in context_cols.split(",") if c.strip()]
    pairs = load_comparisons(data, item1_col=item1_col, item2_col=item2_col, outcome_col=outcome_col,
                             user_col=user_col, context_cols=cols)
    set_threads(threads)
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])  # first optimizer builds torch's lazy imports: not fit time
    start = time.perf_counter()
    if auto:
        k, result, k_choice = _k_by_bic(pairs, k_max, restarts, seed)
    else:
        result, k_choice = fit_latent_class(pairs, k, restarts=restarts, seed=seed), None
    seconds = time.perf_counter() - start
    report = {
        "loglik": result.loglik, "n_pairs": result.n_pairs, "n_users": len(result.users), "fit_seconds": seconds,
        "k": k, "items": pairs.meta["items"], "reference_item": pairs.meta["reference_item"],
        "covariates": pairs.meta["covariates"], "ties_dropped": pairs.meta["ties_dropped"],
        "class_sizes": result.responsibilities.sum(0).tolist(),
        "restarts": result.summary["restarts"], **({"k_auto": k_choice} if k_choice else {}),
    }
    if out is not None:
        report["out"] = str(out)
        columns = {"item1": item1_col, "item2": item2_col, "outcome": outcome_col, "user": user_col}
        typed = LatentClassResult.from_fit(result, pairs.meta, columns, {"fit_seconds": seconds})
        with atomic_dir(out, "run", overwrite=overwrite, inputs=(data,)) as tmp:  # bayesmicro.load(out) reads it
            typed.write_into(tmp)
            write_json(tmp / "metrics.json", report)
    print_table("per-user latent class BT mixture", {f"K={k}": {"loglik": result.loglik, "n_pairs": result.n_pairs,
                                                                "n_users": len(result.users),
                                                                "fit_seconds": seconds}},
                ("loglik", "n_pairs", "n_users", "fit_seconds"))
    if k_choice:
        edge = "; the largest K tried: raise --k-max to see whether BIC falls further" if k == k_max > 1 else ""
        stderr.print(f"--k auto: K = {k}, the lowest BIC over K = 1..{k_max} ("
                     + ", ".join(f"K = {row['k']}: {row['bic']:.1f}" for row in k_choice["by_k"]) + f"){edge}")
    if as_json:
        emit_json(report)
    return report


def _k_by_bic(pairs, k_max: int, restarts: int, seed: int):
    """Fit K = 1..k_max; (the K of lowest BIC = −2·LL + p·log n, n comparisons; its fit; the table)."""
    rows, fits = [], {}
    for k in range(1, k_max + 1):
        fits[k] = fit_latent_class(pairs, k, restarts=restarts, seed=seed)
        p = n_parameters(k, len(pairs.meta["items"]), len(pairs.meta["covariates"]))
        rows.append({"k": k, "loglik": fits[k].loglik, "n_params": p, "bic": bic(fits[k].loglik, p, fits[k].n_pairs)})
    best = min(rows, key=lambda row: row["bic"])["k"]
    return best, fits[best], {"criterion": "bic", "k": best, "by_k": rows}
