"""``bayesmicro fit-comparisons TABLE``: the per-user latent class BT mixture on a paired-comparison table. The command
body builds a ``ComparisonsFitConfig``; ``fit_comparisons`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json, print_table, set_threads, stderr
from bayesmicro.config import ComparisonsFitConfig


@cli_errors
def fit_comparisons_command(
    data: Path = typer.Argument(..., help="A subject,item1,item2,outcome table (.csv/.jsonl/.parquet)."),
    item1_col: str = typer.Option("item1", "--item1-col", help="Column of the first item.", rich_help_panel=o.DATA),
    item2_col: str = typer.Option("item2", "--item2-col", help="Column of the second item.",
                                  rich_help_panel=o.DATA),
    outcome_col: str = typer.Option("outcome", "--outcome-col", help="+1 item1 preferred, -1 item2, 0 tie "
                                    "(dropped).", rich_help_panel=o.DATA),
    user_col: str = typer.Option("subject", "--user-col", help="Column of the user (subject).",
                                 rich_help_panel=o.DATA),
    context_cols: str = typer.Option("", "--context-cols", help="Comma-separated user covariates the router reads.",
                                     rich_help_panel=o.DATA),
    k: str = typer.Option("3", "--k", help="Number of latent classes, or 'auto' (K = 1..--k-max by the lowest BIC).",
                          rich_help_panel=o.MODEL),
    latent: str = o.choice("user", "--latent", ("user",), "user: all comparisons of a user share one class.",
                           o.MODEL),
    k_max: int = o.k_max("Largest K tried by --k auto."),
    restarts: int = o.restarts(10, "EM restarts; the best likelihood wins."),
    seed: int = o.seed(),
    out: Optional[Path] = o.run_out(),
    overwrite: bool = o.overwrite(),
    as_json: bool = o.as_json(),
) -> None:
    """Fit K latent classes of users by EM (all of a user's comparisons share one class; the router is a
    multinomial logit on the user's covariates) and report the maximised log-likelihood."""
    job = ComparisonsFitConfig(data=str(data), k=k, k_max=k_max, restarts=restarts, seed=seed, item1_col=item1_col,
                               item2_col=item2_col, outcome_col=outcome_col, user_col=user_col,
                               context_cols=context_cols, latent=latent, out=None if out is None else str(out),
                               overwrite=overwrite)
    report = fit_comparisons(job)
    if as_json:
        emit_json(report)


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
