"""``bayesmicro fit-comparisons TABLE``: the per-user latent class BT mixture on a paired-comparison table. The command
body builds a ``ComparisonsFitConfig``; ``bayesmicro.jobs`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
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
    from bayesmicro import jobs

    report = jobs.run(job)
    if as_json:
        emit_json(report)
