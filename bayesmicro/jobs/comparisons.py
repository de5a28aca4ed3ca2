"""The ``fit-comparisons`` job (``bayesmicro fit-comparisons``, ``bayesmicro.run(ComparisonsFitConfig(...))``): the
per-user latent class BT mixture on a paired-comparison table."""

from __future__ import annotations

import time
from pathlib import Path

from bayesmicro.config import ComparisonsFitConfig
from bayesmicro.jobs._common import print_table, set_threads, stderr


def fit_comparisons(job: ComparisonsFitConfig) -> dict:
    """Fit K latent classes of users by EM; report the maximised log-likelihood (natural log, ties excluded).
    ``k='auto'``: K = 1..``k_max`` by the lowest BIC."""
    import torch

    from bayesmicro._io import atomic_dir, check_output, write_json
    from bayesmicro.data.protocols.comparisons import load_comparisons
    from bayesmicro.infer.latent_class import fit_latent_class
    from bayesmicro.infer.results.latent_class import LatentClassResult

    data, out = Path(job.data), None if job.out is None else Path(job.out)
    if out is not None:  # before any work
        check_output(out, "run", overwrite=job.overwrite, inputs=(data,))
    columns = {"item1": job.item1_col, "item2": job.item2_col, "outcome": job.outcome_col, "user": job.user_col}
    pairs = load_comparisons(data, item1_col=job.item1_col, item2_col=job.item2_col, outcome_col=job.outcome_col,
                             user_col=job.user_col, context_cols=list(job.context_cols))
    set_threads()
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])  # first optimizer builds torch's lazy imports: not fit time
    start = time.perf_counter()
    if job.k == "auto":
        k, result, k_choice = _k_by_bic(pairs, job.k_max, job.restarts, job.seed)
    else:
        k, result, k_choice = job.k, fit_latent_class(pairs, job.k, restarts=job.restarts, seed=job.seed), None
    seconds = time.perf_counter() - start
    report = {
        "loglik": result.loglik, "n": result.n_pairs, "n_users": len(result.users), "seconds": seconds,
        "k": k, "items": pairs.meta["items"], "reference_item": pairs.meta["reference_item"],
        "covariates": pairs.meta["covariates"], "ties_dropped": pairs.meta["ties_dropped"],
        "class_sizes": result.responsibilities.sum(0).tolist(),
        "restarts": result.summary["restarts"], **({"k_auto": k_choice} if k_choice else {}),
    }
    if out is not None:
        report["out"] = str(out)
        typed = LatentClassResult.from_fit(result, pairs.meta, columns, {"fit_seconds": seconds})
        with atomic_dir(out, "run", overwrite=job.overwrite, inputs=(data,)) as tmp:  # bayesmicro.load(out) reads it
            typed.write_into(tmp)
            job.write_into(tmp)
            write_json(tmp / "metrics.json", report)
    _print_report(report, k_choice, job.k_max)
    return report


def _print_report(report: dict, k_choice: dict | None, k_max: int) -> None:
    k = report["k"]
    print_table("per-user latent class BT mixture", {f"K={k}": report}, ("loglik", "n", "n_users", "seconds"))
    if k_choice:
        edge = "; the largest K tried: raise --k-max to see whether BIC falls further" if k == k_max > 1 else ""
        stderr.print(f"--k auto: K = {k}, the lowest BIC over K = 1..{k_max} ("
                     + ", ".join(f"K = {row['k']}: {row['bic']:.1f}" for row in k_choice["by_k"]) + f"){edge}")


def _k_by_bic(pairs, k_max: int, restarts: int, seed: int):
    """Fit K = 1..k_max; (the K of lowest BIC = −2·LL + p·log n, n comparisons; its fit; the table)."""
    from bayesmicro.infer.latent_class import bic, fit_latent_class, n_parameters

    rows, fits = [], {}
    for k in range(1, k_max + 1):
        fits[k] = fit_latent_class(pairs, k, restarts=restarts, seed=seed)
        p = n_parameters(k, len(pairs.meta["items"]), len(pairs.meta["covariates"]))
        rows.append({"k": k, "loglik": fits[k].loglik, "n_params": p, "bic": bic(fits[k].loglik, p, fits[k].n_pairs)})
    best = min(rows, key=lambda row: row["bic"])["k"]
    return best, fits[best], {"criterion": "bic", "k": best, "by_k": rows}
