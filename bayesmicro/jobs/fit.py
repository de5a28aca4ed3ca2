"""The ``fit`` job (``bayesmicro fit`` / ``fit-vi`` / ``fit-nuts``, ``bayesmicro.run(FitJobConfig(...))``).
``run_fit(config)`` fits the job a ``FitJobConfig`` describes, writes the run folder, prints the table on stderr and
returns the report ``--json`` prints (without the common keys ``bayesmicro.run`` adds)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from bayesmicro._io import atomic_dir, check_output, write_json
from bayesmicro.jobs._common import (collapsed_heads, model_key, print_table, progress, set_threads, stderr,
                                     warning)
from bayesmicro.config import AUTO, FitJobConfig
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.run_split import SPLIT_FILE, write_run_split
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.calibration import ece
from bayesmicro.evaluate.population import compare_on_population
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.capacity import CapacityGrid
from bayesmicro.infer.map import Schedule
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.infer.nuts import NUTSSchedule
from bayesmicro.infer.vi.refine import RefineSchedule
from bayesmicro.infer.vi import VISchedule
from bayesmicro.methods import Inference, Router
from bayesmicro.models.mixture import LABEL_ROUTERS


# held-out minus training NLL (nats per pair) above which `fit` suggests a stronger router prior. Measured: 0.30 for
# the default prior on all HH-RLHF pairs (K = 3, α = 0.5: memorising), 0.04 there with the sd `auto` picks (0.03)
MEMORISATION_GAP = 0.1
# sd of the router's weights across held-out pairs below which `fit` says the router routes nothing. Measured: 1e-7
# (prompts that do not say whose preference a pair is), 1e-8 (HH with router prior sd 0.03); 0.09-0.39 routing
STATIC_ROUTER_SD = 0.01


def run_fit(job: FitJobConfig) -> dict:
    """Fit ``job`` (data or the built-in population), score the held-out pairs, write ``job.out``; the report."""
    data = None if job.data is None else Path(job.data)
    out = None if job.out is None else Path(job.out)
    if out is not None:  # before any work: a refused or unwritable --out costs nothing
        check_output(out, "run", overwrite=job.overwrite, inputs=(data,))
    if data is not None:
        _refuse_a_store(data)
    pairs, drew_split = (None, False) if data is None else _load_split(data, job.test_fraction, job.seed)
    router = job.router or ("context" if data is None else "prompt")
    k = AUTO if job.auto_k else (3 if job.k is None else job.k)
    options = _fit_options(job, router)
    set_threads()
    scale_choice = _auto_scale(job, pairs, k, router, options)
    with progress("fitting", None) as step:
        if pairs is None:
            results, fits = compare_on_population(seed=job.seed, k=k, router=router, on_step=step,
                                                  routed_select=job.select, **options)
            main_fit = fits["routed_mixture"]
        else:
            results, main_fit = _fit_and_score(pairs, k, router, job.seed, step, {**options, "select": job.select})
    results["seconds"] = results.pop("fit_seconds")
    if job.auto_k:
        results["capacity"] = main_fit.summary["capacity"]
        for line in _capacity_warnings(main_fit):
            warning(line)
    if scale_choice is not None:
        results["router_prior_scale_auto"] = scale_choice
    hint = _static_router_hint(results, main_fit, pairs) if pairs is not None else None
    hint = hint or (None if job.router_prior_scale == AUTO else _memorisation_hint(results, router, k))
    if out is not None:
        results["out"] = str(out)
        with atomic_dir(out, "run", overwrite=job.overwrite, inputs=(data,)) as tmp:
            main_fit.write_into(tmp)
            job.write_into(tmp)
            if drew_split:
                write_run_split(tmp, pairs, job.test_fraction, job.seed)
            write_json(tmp / "metrics.json", results)
    _report(job, results, pairs if drew_split else None, scale_choice, hint)
    return results


def _refuse_a_store(data: Path) -> None:
    from bayesmicro.jobs.store import is_shard_store

    if is_shard_store(data):
        raise BadInput("is a shard store: fit it with `bayesmicro fit-store` (one streamed MAP fit)",
                       source=str(data))


def _fit_options(job: FitJobConfig, router: str) -> dict:
    """``bayesmicro.fit``'s keyword arguments for ``job`` (defaults that depend on K and the data resolved)."""
    fixed_scale = None if job.router_prior_scale == AUTO else job.router_prior_scale
    options = dict(restarts=3 if job.restarts is None else job.restarts,
                   prior_scale=job.prior_scale if job.auto_k or job.prior_scale is not None else 1.0,
                   keep_restarts=job.keep_restarts,
                   router_prior_scale=fixed_scale if job.auto_k or fixed_scale is not None else 0.3,
                   inference=job.inference,
                   schedule=Schedule(optimizer=job.optimizer, epochs=20 if job.epochs is None else job.epochs,
                                     batch_size=512 if job.batch_size is None else job.batch_size, lr=job.lr),
                   **_posterior_schedules(job))
    options["alpha"] = ((None if job.auto_k else 0.0 if job.data is None or router in LABEL_ROUTERS else 0.5)
                        if job.alpha is None else job.alpha)
    if job.auto_k:
        options["capacity"] = CapacityGrid(ks=tuple(range(1, job.k_max + 1)), validate_by=job.validate_by)
    return options


def _auto_scale(job: FitJobConfig, pairs, k, router: str, options: dict) -> dict | None:
    """``--router-prior-scale auto`` with a given K: choose the sd (into ``options``); what was chosen, or None."""
    if job.router_prior_scale != AUTO or Router(router) is Router.NONE or job.auto_k or k <= 1:
        return None
    from bayesmicro.evaluate.selection import auto_router_prior_scale

    options["router_prior_scale"], choice = auto_router_prior_scale(
        _selection_pairs(pairs, job.seed), k=k, router=router, seed=job.seed, prior_scale=options["prior_scale"],
        alpha=options["alpha"])
    return choice


def _report(job: FitJobConfig, results: dict, drawn: EmbeddedPairs | None, scale_choice: dict | None,
            hint: str | None) -> None:
    """The table and the lines about what was chosen, on stderr."""
    if drawn is not None:
        kept = f"; recorded in {Path(job.out) / SPLIT_FILE}" if job.out is not None else ""
        stderr.print(f"{job.data} has no split column: held out {int((drawn.split == 'test').sum())} of "
                     f"{len(drawn)} pairs at random (--test-fraction {job.test_fraction}, --seed {job.seed}){kept}")
    rows = {name: value for name, value in results.items() if isinstance(value, dict) and "accuracy" in value}
    print_table("held-out pairs", rows, ("accuracy", "nll", "brier", "ece", "n"))
    for line in _auto_choice_lines(scale_choice) + _capacity_lines(results.get("capacity")):
        stderr.print(line)
    if hint:
        stderr.print(hint)


def _capacity_lines(report: dict | None) -> list[str]:
    """What ``--k auto`` chose, and on what (JSON: ``capacity``)."""
    if report is None:
        return []
    chosen = report["chosen"]
    line = (f"--k auto: K = {chosen['k']}, head prior sd {chosen['prior_scale']:g}, router prior sd "
            f"{chosen['router_prior_scale']:g}, alpha {chosen['alpha']:g} — validation NLL on "
            f"{report['validation_pairs']} training pairs held out by {report['validate_by']}")
    if "single_bt_validation_nll" in report:
        line += (f" (single BT {report['single_bt_validation_nll']:.4f}, "
                 f"mixture {report['mixture_validation_nll']:.4f})")
    return [line]


def _capacity_warnings(main_fit: Fit) -> list[str]:
    """Warnings about an automatic capacity choice: a mixture that lost to one BT on validation, heads that
    collapsed onto each other, a final fit that stopped before its stopping rule."""
    report, out = main_fit.summary["capacity"], []
    single = [row["nll"] for row in report["table"].values() if row["settings"]["k"] == 1]
    mixtures = [row["nll"] for row in report["table"].values() if row["settings"]["k"] > 1]
    if single and mixtures and min(mixtures) >= min(single):
        out.append(f"no mixture beat one BT on the validation pairs (best mixture NLL {min(mixtures):.4f} vs "
                   f"{min(single):.4f}): K = 1 kept")
    if (collapsed := collapsed_heads(main_fit)) is not None:
        out.append(collapsed)
    if main_fit.summary.get("converged") is False:
        out.append(f"the final fit stopped at {main_fit.summary.get('iterations')} iterations before its "
                   "stopping rule was met")
    return out


def _auto_choice_lines(scale_choice: dict | None) -> list[str]:
    """What ``--router-prior-scale auto`` chose, and on what (JSON: ``router_prior_scale_auto``)."""
    if scale_choice is None:
        return []
    return [f"--router-prior-scale auto: sd {scale_choice['router_prior_scale']} (largest held-out ELPD on "
            f"{scale_choice['holdout_pairs']} of the training pairs)"]


def _vi_schedule(job: FitJobConfig) -> dict:
    draws = job.draws
    kept = {} if draws is None else {"draws": draws, "laplace_draws": draws, "refine": RefineSchedule(draws=draws)}
    return {"vi": VISchedule(guide=job.guide, router_posterior=job.router_posterior, **kept)}


def _nuts_schedule(job: FitJobConfig) -> dict:
    kept = {} if job.draws is None else {"draws": job.draws}
    return {"nuts": NUTSSchedule(chains=job.chains, warmup=job.warmup, mass=job.nuts_mass, **kept)}


# the posterior settings each method takes (EM's posterior around its optimum is the VI one)
POSTERIOR_SCHEDULES = {Inference.MAP: lambda job: {}, Inference.VI: _vi_schedule, Inference.EM: _vi_schedule,
                       Inference.NUTS: _nuts_schedule}


def _posterior_schedules(job: FitJobConfig) -> dict:
    """The ``vi`` / ``nuts`` settings of ``fit()`` from the job's posterior settings."""
    return POSTERIOR_SCHEDULES[Inference(job.inference)](job)


def _load_split(data: Path, test_fraction: float, seed: int) -> tuple[EmbeddedPairs, bool]:
    """DATA with its own split, or with a random held-out ``test_fraction``; and whether that split was drawn."""
    pairs = EmbeddedPairs.load(data)
    if pairs.split is not None or test_fraction == 0:
        return pairs, False
    return pairs.with_split(test_fraction, seed), True


def _selection_pairs(pairs: EmbeddedPairs | None, seed: int) -> EmbeddedPairs:
    """The pairs a setting is chosen on (``auto``): the training pairs only, so the run's held-out figures stay
    held out. ``pairs`` None: the built-in population."""
    from bayesmicro.data.synthetic import make_population

    source = make_population(seed=seed)[0] if pairs is None else pairs
    return source if source.split is None else replace(source.part("train"), split=None)


def _fit_and_score(pairs: EmbeddedPairs, k: int, router: str, seed: int, step, options: dict):
    """Fit on the training split and score the held-out split (the training pairs when there is none)."""
    start = time.perf_counter()
    main_fit = fit(pairs, k=k, router=router, seed=seed, on_step=step, **options)
    held_out = pairs.part("test") if pairs.split is not None and "test" in set(pairs.split) else pairs
    proba = main_fit.predict_proba(held_out)
    k = main_fit.config.k
    key = model_key(k, router)
    results = {key: score(proba, held_out.group), "fit_seconds": time.perf_counter() - start,
               "evaluated_on": "test" if held_out is not pairs else "train"}
    results["optimisation"] = {key: main_fit.summary[key] for key in ("converged", "iterations", "objective")
                               if key in main_fit.summary}
    if "capacity" in main_fit.summary and k > 1:  # one BT beside the chosen mixture, at the head prior it chose
        single = fit(pairs, k=1, seed=seed, prior_scale=main_fit.config.prior_scale)
        results["single_bt"] = score(single.predict_proba(held_out), held_out.group)
        results["single_bt"]["train_nll"] = -single.summary["train_loglik"] / single.summary["train_pairs"]
    results[key]["ece"] = ece(proba)
    results[key]["train_nll"] = -main_fit.summary["train_loglik"] / main_fit.summary["train_pairs"]
    if Router(main_fit.config.router) is not Router.NONE and k > 1 and len(held_out) > 1:
        results[key]["router_weight_sd"] = float(main_fit.log_weights(held_out).exp().std(0).max())
    return results, main_fit


def _static_router_hint(results: dict, main_fit: Fit, pairs: EmbeddedPairs) -> str | None:
    """A line for stderr when a router that reads an input gives every held-out pair the same weights: the fit is
    then a static mixture, which on independent pairs predicts little better than one BT."""
    config = main_fit.config
    sd = results.get(model_key(config.k, config.router), {}).get("router_weight_sd")
    if sd is None or sd > STATIC_ROUTER_SD:
        return None
    labels = [key for key in ("user", "group") if getattr(pairs, key) is not None and key != config.router]
    remedy = f"; if preferences differ by {' or '.join(labels)}, route on it: --router {'|'.join(labels)}" \
        if labels else ""
    return (f"the router gives every held-out pair the same weights (sd of π {sd:.1g}): this is a static mixture; "
            f"its input ({config.router}), under the prior sd {config.router_prior_scale:g} and α = "
            f"{config.alpha:g}, does not tell the heads apart{remedy}")


def _memorisation_hint(results: dict, router: str, k: int) -> str | None:
    """A line for stderr when a routed mixture's held-out NLL sits far above its training NLL (the MAP's). Not for a
    label router: it has no per-pair input to memorise with, and held-out users it has not seen are expected to be
    predicted worse."""
    row = results.get(model_key(k, router), {})
    if not Router(router).reads_embedding or k == 1 or results.get("evaluated_on") != "test" or "train_nll" not in row:
        return None
    gap = row["nll"] - row["train_nll"]
    if gap <= MEMORISATION_GAP:
        return None
    return (f"held-out NLL {row['nll']:.3f} is {gap:.2f} nats above the training NLL {row['train_nll']:.3f}: the "
            "router may be memorising which head fits each training pair; try --router-prior-scale auto")
