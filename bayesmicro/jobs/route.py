"""The ``route`` job (``bayesmicro route``, ``bayesmicro.run(RouteConfig(...))``): stage 2 — route a fitted run on B
labelled pairs per group (user); accuracy/NLL before and after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bayesmicro.config import RouteConfig
from bayesmicro.errors import BadInput
from bayesmicro.jobs._common import collapsed_heads, pairs_for_run, print_table, set_threads, stderr, warning
from bayesmicro.methods import RestartRule, RouteMethod

# a routed prediction closer than this to stage 1's, on every held-out pair, is a no-op
NO_OP_CHANGE = 1e-6


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
    from bayesmicro.routing.registry import ROUTE_METHODS
    from bayesmicro.routing.route import route_predict

    labels = getattr(test, by)
    before_proba = fit.predict_proba(test)  # what stage 1 predicts
    results = {"budget": job.budget, "tau": job.tau, "by": by, "n_labelled": len(labelled),
               "before": score(before_proba, labels), "after": {},
               "selection": {"kind": "active", "acquisition": job.acquisition, "pool_size": job.pool_size}
               if job.active else {"kind": "random"}}
    routed, results["restart_choice"] = choose_restart(fit, labelled, by, job.restart)
    scales = None
    if any(ROUTE_METHODS[RouteMethod(m)].uses_offsets for m in job.methods):
        scales = estimate_scales(fit, train, by)
        results["unit_scales"] = scales.as_dict()
        stderr.print(f"hierarchical: prior sd of a {by}'s head offsets {scales.head:.3g}, of its router-logit "
                     f"offsets {scales.logit:.3g} (empirical Bayes on {scales.units} training {by}s)")
    for m in job.methods:
        after_proba = route_predict(routed, labelled, test, m, tau=job.tau, seed=job.seed, by=by, scales=scales,
                                    population=train)
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
