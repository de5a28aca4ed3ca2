"""``bayesmicro route``: stage 2 — route a fitted run on B labelled pairs per group; accuracy/NLL before and after.
The command body builds a ``RouteConfig``; ``run_route`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, collapsed_heads, emit_json, pairs_for_run, print_table, set_threads, stderr, warning
from bayesmicro.config import RouteConfig
from bayesmicro.errors import BadInput
from bayesmicro.methods import Acquisition, RestartRule, RouteMethod

# a routed prediction closer than this to stage 1's, on every held-out pair, is a no-op
NO_OP_CHANGE = 1e-6
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
                           "shrunk to stage 1, prior sds by empirical Bayes from the training pairs' units; "
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
    results = run_route(job)
    if as_json:
        emit_json(results)


def run_route(job: RouteConfig) -> dict:
    """Route ``job.run`` on B labelled pairs per unit of ``job.data``; scores before and after (``--json``'s)."""
    from bayesmicro.infer.results.mixture import Fit

    fit = Fit.load(Path(job.run))
    _check_run(fit, job)
    pairs, by = _route_pairs(fit, job)
    set_threads()
    train, test = pairs.part("train"), pairs.part("test")
    select = _selector(fit, train, max([job.budget, *job.budgets]), by, job)
    labelled = select(train, job.budget)
    _say_if_short(getattr(labelled, by), job.budget, by)
    results = _routed_scores(fit, job, labelled, train, test, by)
    if job.budgets:
        from bayesmicro.evaluate.metrics import score
        from bayesmicro.routing.route import budget_curve

        results["budget_curve"] = budget_curve(fit, pairs, list(job.methods), list(job.budgets), tau=job.tau,
                                               seed=job.seed, by=by, score_fn=score, select=select,
                                               restart=job.restart, scales=results.pop("_scales"))
    results.pop("_scales", None)
    rows = {"before": results["before"], **{f"after ({m})": s for m, s in results["after"].items()}}
    print_table(f"held-out pairs, B = {job.budget} per {by}", rows, ("accuracy", "nll", "brier", "n"))
    return results


def _check_run(fit, job: RouteConfig) -> None:
    """Refuse a run the methods cannot route; warn about heads that predict alike."""
    from bayesmicro.routing.route import WEIGHT_METHODS, check_routable

    reweighting = [m for m in job.methods if m in WEIGHT_METHODS]
    if reweighting:
        check_routable(fit, source=job.run)
    if reweighting and (collapsed := collapsed_heads(fit)) is not None:
        warning(f"{job.run}: {collapsed}: routing re-weights heads that predict alike and can change little")
    if RestartRule(job.restart) is RestartRule.CONTEXT and not fit.restart_modes:
        raise BadInput("--restart context chooses among the run's restarts, and this run kept none: fit it with "
                       "--keep-restarts", source=job.run)


def _route_pairs(fit, job: RouteConfig):
    """(DATA with the run's split or a drawn one, the context stage 2 reads; the routing unit)."""
    from bayesmicro.routing.registry import ROUTE_METHODS

    pairs, _ = pairs_for_run(Path(job.run), Path(job.data), fit)
    if job.context_from is not None:
        pairs = pairs.with_label_context(job.context_from)
    pairs = fit.with_label_context(pairs)  # a run routed on a label: stage 2 reads the same one-hot
    if pairs.context is None and any(ROUTE_METHODS[RouteMethod(m)].reads_context for m in job.methods):
        raise BadInput("routing needs a 'context' matrix in DATA (or --context-from group|user: the one-hot of "
                       "that label)", source=job.data)
    by = _routing_unit(pairs, job.by, Path(job.data))
    fit.check_compatible(pairs)
    return pairs.with_split(job.test_fraction, job.seed), by


def _routed_scores(fit, job: RouteConfig, labelled, train, test, by: str) -> dict:
    """Stage 1's and each method's held-out scores (per unit under ``by_group``), and what was chosen."""
    from bayesmicro.evaluate.metrics import score
    from bayesmicro.routing.choose import choose_restart
    from bayesmicro.routing.hierarchical import estimate_scales
    from bayesmicro.routing.route import route_predict

    labels = getattr(test, by)
    before_proba = fit.predict_proba(test)  # what stage 1 predicts
    results = {"budget": job.budget, "tau": job.tau, "by": by, "n_labelled": len(labelled),
               "before": score(before_proba, labels), "after": {},
               "selection": {"kind": "active", "acquisition": job.acquisition, "pool_size": job.pool_size}
               if job.active else {"kind": "random"}}
    routed, results["restart_choice"] = choose_restart(fit, labelled, by, job.restart)
    scales = None
    if "hierarchical" in job.methods:
        scales = estimate_scales(fit, train, by)
        results["unit_scales"] = scales.as_dict()
        stderr.print(f"hierarchical: prior sd of a {by}'s head offsets {scales.head:.3g}, of its router-logit "
                     f"offsets {scales.logit:.3g} (empirical Bayes on {scales.units} training {by}s)")
    for m in job.methods:
        after_proba = route_predict(routed, labelled, test, m, tau=job.tau, seed=job.seed, by=by, scales=scales)
        results["after"][m] = score(after_proba, labels)
        change = float((after_proba.double() - before_proba.double()).abs().max()) if len(test) else 0.0
        if change < NO_OP_CHANGE:
            warning(f"--method {m} changed no held-out prediction (largest change {change:.1e}): routing did nothing")
    results["_scales"] = scales
    return results


def _say_if_short(labels, budget: int, by: str) -> None:
    """A unit with fewer than B training pairs has all of them labelled: say so rather than report B silently."""
    import numpy as np

    units, counts = np.unique(labels, return_counts=True)
    short = counts < budget
    if short.any():
        stderr.print(f"--budget {budget}: {int(short.sum())} of {len(units)} {by}s have fewer training pairs "
                     f"(fewest {int(counts.min())}, {by} {units[counts.argmin()]}); all of theirs are labelled")


def _routing_unit(pairs, by: str | None, data: Path) -> str:
    """The label stage 2 routes per: ``by`` if given, else 'group' when DATA has it, else 'user'."""
    if by is None:
        by = "group" if pairs.group is not None or pairs.user is None else "user"
    if getattr(pairs, by) is None:
        other = "user" if by == "group" else "group"
        hint = f" (it has '{other}' labels: --by {other})" if getattr(pairs, other) is not None else ""
        raise BadInput(f"routing needs a '{by}' label for every pair in DATA{hint}", source=str(data))
    return by


def _selector(fit, train, largest: int, by: str, job: RouteConfig) -> Callable:
    """select(train, B): B pairs per ``by`` label, at random or by active queries (asked once for the largest
    budget; a smaller budget takes the first B asked)."""
    from bayesmicro.routing.active import active_orders, prefix_subset
    from bayesmicro.routing.common import budget_subset

    if not job.active:
        return lambda part, b: budget_subset(part, b, seed=job.seed, by=by)
    orders = active_orders(fit, train, largest, by=by, strategy=job.acquisition, pool_size=job.pool_size,
                           seed=job.seed)
    return lambda part, b: prefix_subset(part, orders, b)
