"""``bayesmicro route``: stage 2 — route a fitted run on B labelled pairs per group; accuracy/NLL before and after.
The command body builds a ``RouteConfig``; ``bayesmicro.jobs`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import RouteConfig
from bayesmicro.methods import Acquisition, RouteMethod

UNITS = ("group", "user")
STAGE2 = "Stage 2"


@cli_errors
def route_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs with 'group' (or 'user') labels and a 'context' matrix "
                                "(or --context-from)."),
    by: Optional[str] = o.choice(None, "--by", UNITS, "The unit that gets B labelled pairs (default: group when "
                                 "DATA has group labels, else user).", o.DATA),
    context_from: Optional[str] = o.choice(None, "--context-from", UNITS, "The context stage 2 routes on is the "
                                           "one-hot of this label (replaces DATA's context).", o.DATA),
    test_fraction: float = o.test_fraction("Held-out share when DATA has no split column and the run recorded "
                                           "none (split.json from `fit`)."),
    method: str = o.choice(RouteMethod.HIERARCHICAL, "--method", RouteMethod, "hierarchical: per-unit offsets "
                           "shrunk to stage 1, prior sds by empirical Bayes from the training pairs' units; joint: "
                           "the same with the population refitted together with them (units seen in training); "
                           "comma-separated for several.", STAGE2),
    budget: int = typer.Option(50, "--budget", help="Labelled training pairs per group (user).",
                               rich_help_panel=STAGE2),
    budgets: Optional[str] = typer.Option(None, "--budgets", help="Budget curve, e.g. 10,25,50,100.",
                                          rich_help_panel=STAGE2),
    tau: float = typer.Option(1e-3, "--tau", help="Hedge temperature τ (paper: 1e-3 HelpSteer2, 1e-4 RPR).",
                              rich_help_panel=STAGE2),
    restart: str = o.choice("kept", "--restart", ("kept", "context"), "Route the restart stage 1 kept, or the one "
                            "(of a `fit --keep-restarts` run) whose router best separates the labelled pairs' "
                            "groups (users).", STAGE2),
    active: bool = typer.Option(False, "--active", help="Ask each group's (user's) B pairs by active queries on "
                                "the weight posterior instead of at random (DATA's orientation plays the answers).",
                                rich_help_panel=STAGE2),
    acquisition: str = o.choice(Acquisition.EPIG, "--acquisition", tuple(a for a in Acquisition if a is not Acquisition.RANDOM),
                                "With --active: epig (information about the predictions) | eer (expected "
                                "accuracy) | eig (information about π).", STAGE2),
    pool_size: int = typer.Option(200, "--pool-size", help="With --active: candidate pairs per group (user).",
                                  rich_help_panel=STAGE2),
    seed: int = o.seed(),
    as_json: bool = o.as_json(),
) -> None:
    """Stage 2: route on B labelled pairs per group; report per-group accuracy and NLL before/after."""
    job = RouteConfig(run=str(run_dir), data=str(data), methods=method, budget=budget, budgets=budgets or (),
                      tau=tau, by=by, context_from=context_from, test_fraction=test_fraction, active=active,
                      acquisition=acquisition, pool_size=pool_size, restart=restart, seed=seed)
    from bayesmicro import jobs

    results = jobs.run(job)
    if as_json:
        emit_json(results)
