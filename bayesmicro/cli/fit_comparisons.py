"""``bayesmicro fit DATA --format comparisons``: the per-user latent class BT mixture on a paired-comparison table."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bayesmicro._io import atomic_dir, write_json
from bayesmicro.cli.common import emit_json, print_table, set_threads
from bayesmicro.data.protocols.comparisons import load_comparisons
from bayesmicro.errors import BadInput
from bayesmicro.infer.latent_class import fit_latent_class
from bayesmicro.infer.latent_class_result import LatentClassResult


def fit_comparisons(data: Path, *, item1_col: str, item2_col: str, outcome_col: str, user_col: str,
                    context_cols: str, latent: str, k: int | str, restarts: int, seed: int, out: Path | None,
                    as_json: bool, threads: int | None) -> dict:
    """Fit K latent classes of users (all of a user's comparisons share one class; the router is a multinomial
    logit on the user's covariates) by EM; report the maximised log-likelihood (natural log, ties excluded)."""
    try:
        k = int(k)
    except ValueError:
        raise BadInput(f"--k must be a whole number of classes with --format comparisons, got {k!r}") from None
    if latent != "user":
        raise BadInput(f"--latent must be 'user' with --format comparisons, got {latent!r}")
    cols = [c.strip() for c in context_cols.split(",") if c.strip()]
    pairs = load_comparisons(data, item1_col=item1_col, item2_col=item2_col, outcome_col=outcome_col,
                             user_col=user_col, context_cols=cols)
    set_threads(threads)
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])  # first optimizer builds torch's lazy imports: not fit time
    start = time.perf_counter()
    result = fit_latent_class(pairs, k, restarts=restarts, seed=seed)
    seconds = time.perf_counter() - start
    report = {
        "loglik": result.loglik, "n_pairs": result.n_pairs, "n_users": len(result.users), "fit_seconds": seconds,
        "k": k, "items": pairs.meta["items"], "reference_item": pairs.meta["reference_item"],
        "covariates": pairs.meta["covariates"], "ties_dropped": pairs.meta["ties_dropped"],
        "class_sizes": result.responsibilities.sum(0).tolist(),
        "restarts": result.summary["restarts"],
    }
    if out is not None:
        report["out"] = str(out)
        columns = {"item1": item1_col, "item2": item2_col, "outcome": outcome_col, "user": user_col}
        typed = LatentClassResult.from_fit(result, pairs.meta, columns, {"fit_seconds": seconds})
        with atomic_dir(out) as tmp:  # loadable with bayesmicro.load(out)
            typed.write_into(tmp)
            write_json(tmp / "metrics.json", report)
    print_table("per-user latent class BT mixture", {f"K={k}": {"loglik": result.loglik, "n_pairs": result.n_pairs,
                                                                "n_users": len(result.users),
                                                                "fit_seconds": seconds}},
                ("loglik", "n_pairs", "n_users", "fit_seconds"))
    if as_json:
        emit_json(report)
    return report
