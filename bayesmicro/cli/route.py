"""``bayesmicro route``: stage 2 — route a fitted run on B labelled pairs per group; accuracy/NLL before and after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from bayesmicro import _check as check
from bayesmicro.cli.common import cli_errors, collapsed_heads, emit_json, pairs_for_run, print_table, set_threads, stderr, warning
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.routing.active import STRATEGIES, active_orders, prefix_subset
from bayesmicro.routing.choose import RESTART_RULES, choose_restart
from bayesmicro.routing.common import budget_subset
from bayesmicro.routing.hierarchical import estimate_scales
from bayesmicro.routing.route import METHODS, WEIGHT_METHODS, budget_curve, check_routable, route_predict


# a routed prediction closer than this to stage 1's, on every held-out pair, is a no-op
NO_OP_CHANGE = 1e-6
@cli_errors
def route_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs with 'group' (or 'user') labels and a 'context' matrix "
                                "(or --context-from)."),
    method: str = typer.Option("hierarchical", "--method", help="hierarchical (per-unit offsets shrunk to stage 1, "
                               "prior sds by empirical Bayes from the training pairs' units) | hedge | posterior | "
                               "amortized | hyre (comma-separated for several)."),
    budget: int = typer.Option(50, "--budget", help="Labelled training pairs per group."),
    budgets: Optional[str] = typer.Option(None, "--budgets", help="Budget curve, e.g. 10,25,50,100."),
    tau: float = typer.Option(1e-3, "--tau", help="Hedge temperature τ (paper: 1e-3 HelpSteer2, 1e-4 RPR)."),
    seed: int = typer.Option(0, "--seed"),
    by: Optional[str] = typer.Option(None, "--by", help="group | user: the unit that gets B labelled pairs "
                                     "(default: group when DATA has group labels, else user)."),
    context_from: Optional[str] = typer.Option(None, "--context-from", help="group | user: the context stage 2 "
                                               "routes on is the one-hot of this label (replaces DATA's context)."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Held-out share when DATA has no split "
                                        "column and the run recorded none (split.json from `fit`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    active: bool = typer.Option(False, "--active", help="Ask each group's (user's) B pairs by active queries on "
                                "the weight posterior instead of at random (DATA's orientation plays the answers)."),
    acquisition: str = typer.Option("epig", "--acquisition", help="With --active: epig (information about the "
                                    "predictions) | eer (expected accuracy) | eig (information about π)."),
    pool_size: int = typer.Option(200, "--pool-size", help="With --active: candidate pairs per group (user)."),
    restart: str = typer.Option("kept", "--restart", help="kept | context: route the restart stage 1 kept, or the "
                                "one (of a `fit --keep-restarts` run) whose router best separates the labelled "
                                "pairs' groups (users)."),
) -> None:
    """Stage 2: route on B labelled pairs per group; report per-group accuracy and NLL before/after."""
    methods = [m.strip() for m in method.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise BadInput(f"--method must be among {METHODS}, got {method!r}")
    if by not in (None, "group", "user"):
        raise BadInput(f"--by must be 'group' or 'user', got {by!r}")
    seed = check.seed(seed)
    check.integer(budget, "budget", 1)
    curve_budgets = check.integers_list(budgets, "budgets") if budgets is not None else []
    check.number(tau, "tau", 0, low_open=True)
    check.number(test_fraction, "test_fraction", 0, 1, low_open=True, high_open=True)
    check.integer(pool_size, "pool_size", 1)
    if threads is not None:
        check.integer(threads, "threads", 1)
    if restart not in RESTART_RULES:
        raise BadInput(f"--restart must be one of {', '.join(RESTART_RULES)}, got {restart!r}")
    fit = Fit.load(run_dir)
    reweighting = [m for m in methods if m in WEIGHT_METHODS]
    if reweighting:
        check_routable(fit, source=str(run_dir))
    if reweighting and (collapsed := collapsed_heads(fit)) is not None:
        warning(f"{run_dir}: {collapsed}: routing re-weights heads that predict alike and can change little")
    if restart == "context" and not fit.restart_modes:
        raise BadInput("--restart context chooses among the run's restarts, and this run kept none: fit it with "
                       "--keep-restarts", source=str(run_dir))
    pairs, _ = pairs_for_run(run_dir, data, fit)
    if context_from is not None:
        if context_from not in ("group", "user"):
            raise BadInput(f"--context-from must be 'group' or 'user', got {context_from!r}")
        pairs = pairs.with_label_context(context_from)
    pairs = fit.with_label_context(pairs)  # a run routed on a label: stage 2 reads the same one-hot
    if pairs.context is None and any(m in ("hedge", "amortized") for m in methods):
        raise BadInput("routing needs a 'context' matrix in DATA (or --context-from group|user: the one-hot of "
                       "that label)", source=str(data))
    by = _routing_unit(pairs, by, data)
    fit.check_compatible(pairs)
    pairs = pairs.with_split(test_fraction, seed)
    set_threads(threads)
    train, test = pairs.part("train"), pairs.part("test")
    labels = getattr(test, by)
    before = score(fit.predict_proba(test), labels)  # what stage 1 predicts
    select = _selector(fit, train, max([budget, *curve_budgets]), by, seed, active, acquisition, pool_size)
    labelled = select(train, budget)
    _say_if_short(getattr(labelled, by), budget, by)
    results = {"budget": budget, "tau": tau, "by": by, "n_labelled": len(labelled), "before": before, "after": {},
               "selection": {"kind": "active", "acquisition": acquisition, "pool_size": pool_size} if active
               else {"kind": "random"}}
    routed, results["restart_choice"] = choose_restart(fit, labelled, by, restart)
    scales = None
    if "hierarchical" in methods:
        scales = estimate_scales(fit, train, by)
        results["unit_scales"] = scales.as_dict()
        stderr.print(f"hierarchical: prior sd of a {by}'s head offsets {scales.head:.3g}, of its router-logit "
                     f"offsets {scales.logit:.3g} (empirical Bayes on {scales.units} training {by}s)")
    before_proba = fit.predict_proba(test)
    for m in methods:
        after_proba = route_predict(routed, labelled, test, m, tau=tau, seed=seed, by=by, scales=scales)
        results["after"][m] = score(after_proba, labels)
        change = float((after_proba.double() - before_proba.double()).abs().max()) if len(test) else 0.0
        if change < NO_OP_CHANGE:
            warning(f"--method {m} changed no held-out prediction (largest change {change:.1e}): routing did nothing")
    if curve_budgets:
        results["budget_curve"] = budget_curve(fit, pairs, methods, curve_budgets, tau=tau, seed=seed, by=by,
                                               score_fn=score, select=select, restart=restart, scales=scales)
    rows = {"before": before, **{f"after ({m})": s for m, s in results["after"].items()}}
    print_table(f"held-out pairs, B = {budget} per {by}", rows, ("accuracy", "nll", "brier", "n"))
    if as_json:
        emit_json(results)


def _say_if_short(labels: np.ndarray, budget: int, by: str) -> None:
    """A unit with fewer than B training pairs has all of them labelled: say so rather than report B silently."""
    units, counts = np.unique(labels, return_counts=True)
    short = counts < budget
    if short.any():
        stderr.print(f"--budget {budget}: {int(short.sum())} of {len(units)} {by}s have fewer training pairs "
                     f"(fewest {int(counts.min())}, {by} {units[counts.argmin()]}); all of theirs are labelled")


def _routing_unit(pairs: EmbeddedPairs, by: str | None, data: Path) -> str:
    """The label stage 2 routes per: ``by`` if given, else 'group' when DATA has it, else 'user'."""
    if by is None:
        by = "group" if pairs.group is not None or pairs.user is None else "user"
    if getattr(pairs, by) is None:
        other = "user" if by == "group" else "group"
        hint = f" (it has '{other}' labels: --by {other})" if getattr(pairs, other) is not None else ""
        raise BadInput(f"routing needs a '{by}' label for every pair in DATA{hint}", source=str(data))
    return by


def _selector(fit: Fit, train: EmbeddedPairs, largest: int, by: str, seed: int, active: bool, acquisition: str,
              pool_size: int) -> Callable[[EmbeddedPairs, int], EmbeddedPairs]:
    """select(train, B): B pairs per ``by`` label, at random or by active queries (asked once for the largest
    budget; a smaller budget takes the first B asked)."""
    if not active:
        return lambda part, b: budget_subset(part, b, seed=seed, by=by)
    if acquisition not in STRATEGIES or acquisition == "random":
        raise BadInput(f"--acquisition must be one of {tuple(s for s in STRATEGIES if s != 'random')}, "
                       f"got {acquisition!r}")
    if pool_size < 1:
        raise BadInput(f"--pool-size must be ≥ 1, got {pool_size}")
    orders = active_orders(fit, train, largest, by=by, strategy=acquisition, pool_size=pool_size, seed=seed)
    return lambda part, b: prefix_subset(part, orders, b)
