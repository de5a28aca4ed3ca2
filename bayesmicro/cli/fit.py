"""``bayesmicro fit``: fit a mixture of BT heads (or, with no DATA, the built-in comparison on a known population)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from bayesmicro import _check as check
from bayesmicro._io import atomic_dir, check_output, write_json
from bayesmicro.cli.fit_comparisons import fit_comparisons
from bayesmicro.cli.fit_streamed import fit_streamed, is_shard_store, refuse_for_a_store
from bayesmicro.cli.common import cli_errors, collapsed_heads, emit_json, model_key, print_table, progress, set_threads, stderr
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.run_split import SPLIT_FILE, write_run_split
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.calibration import ece
from bayesmicro.evaluate.population import compare_on_population
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import INFERENCE_METHODS, RESTART_SELECT, fit
from bayesmicro.infer.capacity import VALIDATE_BY, CapacityGrid
from bayesmicro.infer.map import Schedule
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.infer.nuts import NUTSSchedule
from bayesmicro.infer.vi.refine import RefineSchedule
from bayesmicro.infer.vi import GUIDES, ROUTER_POSTERIORS, VISchedule
from bayesmicro.models.mixture import LABEL_ROUTERS, ROUTERS


# held-out minus training NLL (nats per pair) above which `fit` suggests a stronger router prior. Measured: 0.30 for
# the default prior on all HH-RLHF pairs (K = 3, α = 0.5: memorising), 0.04 there with the sd `auto` picks (0.03)
MEMORISATION_GAP = 0.1
# sd of the router's weights across held-out pairs below which `fit` says the router routes nothing. Measured: 1e-7
# (prompts that do not say whose preference a pair is), 1e-8 (HH with router prior sd 0.03); 0.09-0.39 routing
STATIC_ROUTER_SD = 0.01


@cli_errors
def fit_command(
    data: Optional[Path] = typer.Argument(None, help="Embedded pairs: a folder from `bayesmicro embed` or an .npz; "
                                          "or a shard store (bayesmicro.write_shards): a streamed fit. Omit to run "
                                          "the built-in synthetic comparison."),
    k: Optional[str] = typer.Option(None, "--k", help="Number of BT heads, or 'auto' (the default with in-memory "
                                    "DATA; 3 for the built-in comparison and a shard store): K = 1..--k-max, and the "
                                    "prior scales and α not given, chosen by the log-likelihood of a validation part "
                                    "of the training pairs (--validate-by); the test pairs play no part."),
    validate_by: str = typer.Option("pair", "--validate-by", help="pair | group | user: what --k auto holds out "
                                    "whole — distinct comparisons, or whole groups/users (as the test will)."),
    router: Optional[str] = typer.Option(None, "--router", help="none | prompt | context | user | group: what the "
                                         "router reads — user/group: the one-hot of each pair's label, i.e. each "
                                         "user's (group's) own weights (default: prompt with DATA, context on the "
                                         "built-in population)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (config, params, metrics): a new or "
                                       "empty folder, or with --overwrite an earlier run folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it is an earlier run folder "
                                   "(holding only what bayesmicro wrote)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="Random restarts; the best training "
                                           "log-likelihood wins (default 3; 10 with --format comparisons)."),
    select_restart: str = typer.Option("loglik", "--select-restart", help="loglik | evidence: keep the restart with "
                                       "the best training log-likelihood, or (routed mixtures) the largest Laplace "
                                       "evidence, which penalises a router that memorises pairs."),
    keep_restarts: bool = typer.Option(False, "--keep-restarts", help="Keep every restart's MAP in the run "
                                       "(restarts/<r>/) for `bayesmicro route --restart context` to choose among."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Router-entropy regulariser α (default: chosen by "
                                          "--k auto; with a given K the paper's 0.5 with DATA; 0 on the built-in "
                                          "population)."),
    prior_scale: Optional[float] = typer.Option(None, "--prior-scale", help="sd of the Gaussian prior on head "
                                                "weights (default: chosen by --k auto, else 1)."),
    router_prior_scale: Optional[str] = typer.Option(None, "--router-prior-scale", help="sd of the Gaussian prior on "
                                                     "the router network's weights (default: chosen by --k auto, "
                                                     "else 0.3), or 'auto' (the best held-out ELPD of 0.03, 0.1, "
                                                     "0.3, 1 on training pairs)."),
    inference: str = typer.Option("map", "--inference", help="map | vi | nuts | em"),
    optimizer: str = typer.Option("auto", "--optimizer", help="auto | lbfgs | adam"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="AdamW epochs (minibatch optimizer; default 20, "
                                         "1 for a shard store)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 512; 8,192 for a shard store."),
    lr: float = typer.Option(2e-3, "--lr"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda[:i]: where a shard store's streamed fit runs "
                               "(in-memory fits run on the CPU)."),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Shard store: checkpoint here "
                                                  "every --checkpoint-every steps and resume from the newest."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Held-out share when DATA has no split."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default: 1 for small fits)."),
    k_max: int = typer.Option(5, "--k-max", help="Largest K tried by --k auto."),
    guide: str = typer.Option("lowrank", "--guide", help="VI guide: lowrank | normal (mean field)."),
    chains: int = typer.Option(1, "--chains", help="NUTS chains, run one after another; split-R̂ is reported "
                               "with 2 or more."),
    draws: Optional[int] = typer.Option(None, "--draws", help="Posterior draws kept (NUTS: per chain; default 400 "
                                        "NUTS, 640 refined, 4,000 linearised/Laplace, 1,000 SVI)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="NUTS warm-up steps (default 100 with the Laplace "
                                         "mass matrix, 300 with adapt)."),
    nuts_mass: str = typer.Option("laplace", "--nuts-mass", help="NUTS mass matrix: laplace (the Laplace covariance, "
                                  "fixed; routed mixtures) | adapt (Pyro's diagonal adaptation)."),
    router_posterior: str = typer.Option("refined", "--router-posterior", help="VI on a routed mixture: "
                                         "refined (the linearised draws moved by HMC on the exact network: NUTS's "
                                         "calibration) | linearised (every router layer + heads, router linearised "
                                         "at the MAP, ELBO-optimal mean; a few times faster) | laplace (the "
                                         "Gaussian centred on the MAP) | svi (output layer)."),
    data_format: str = typer.Option("embedded", "--format", help="embedded | comparisons (a subject,item1,item2,"
                                    "outcome table: per-user latent class model)."),
    item1_col: str = typer.Option("item1", "--item1-col"),
    item2_col: str = typer.Option("item2", "--item2-col"),
    outcome_col: str = typer.Option("outcome", "--outcome-col", help="+1 item1 preferred, -1 item2, 0 tie (dropped)."),
    user_col: str = typer.Option("subject", "--user-col"),
    context_cols: str = typer.Option("", "--context-cols", help="Comma-separated covariates the router reads."),
    latent: str = typer.Option("user", "--latent", help="user: all comparisons of a user share one class."),
) -> None:
    """Fit a mixture of Bradley–Terry heads and report held-out accuracy and NLL."""
    select_restart = check.choice(select_restart, "select", RESTART_SELECT)
    data_format = check.choice(data_format, "data_format", ("embedded", "comparisons"))
    seed = check.seed(seed)
    if restarts is not None:
        check.integer(restarts, "restarts", 1)
    if alpha is not None:
        check.number(alpha, "alpha", 0)
    if prior_scale is not None:
        check.number(prior_scale, "prior_scale", 0, low_open=True)
    validate_by = check.choice(validate_by, "validate_by", VALIDATE_BY)
    check.number(lr, "lr", 0, low_open=True)
    check.number(test_fraction, "test_fraction", 0, 1, high_open=True)
    check.integer(k_max, "k_max", 1)
    check.integer(checkpoint_every, "checkpoint_every", 1)
    if threads is not None:
        check.integer(threads, "threads", 1)
    if router is not None:
        check.choice(router, "router", ROUTERS)
    check.choice(inference, "inference", INFERENCE_METHODS)
    check.choice(guide, "guide", GUIDES)
    check.choice(router_posterior, "router_posterior", ROUTER_POSTERIORS)
    if router_prior_scale is not None and router_prior_scale.strip().lower() != "auto":
        check.number(_number(router_prior_scale, "router_prior_scale"), "router_prior_scale", 0, low_open=True)
    if out is not None:  # before any work: a refused or unwritable --out costs nothing
        check_output(out, "run", overwrite=overwrite, inputs=(data, checkpoint_dir))
    if data_format == "comparisons":
        if data is None:
            raise BadInput("--format comparisons needs a DATA table")
        if select_restart != "loglik":
            raise BadInput("--select-restart: a latent class model's EM restarts are compared by likelihood only")
        if keep_restarts:
            raise BadInput("--keep-restarts: a latent class model keeps its best EM restart only")
        fit_comparisons(data, item1_col=item1_col, item2_col=item2_col, outcome_col=outcome_col, user_col=user_col,
                        context_cols=context_cols, latent=latent, k=k or "3", restarts=10 if restarts is None else restarts,
                        seed=seed, out=out, as_json=as_json, threads=threads, k_max=k_max, overwrite=overwrite)
        return
    if data is not None and is_shard_store(data):
        refuse_for_a_store(inference=inference, router_prior_scale=router_prior_scale, restarts=restarts,
                           optimizer=optimizer, select_restart=select_restart, keep_restarts=keep_restarts)
        schedule = {"lr": lr, "checkpoint_every": checkpoint_every if checkpoint_dir is not None else 0,
                    **({} if epochs is None else {"epochs": epochs}),
                    **({} if batch_size is None else {"batch_size": batch_size})}
        fit_streamed(data, k="3" if k is None else k, router=router or "prompt",
                     alpha=0.5 if alpha is None else alpha, prior_scale=1.0 if prior_scale is None else prior_scale,
                     router_prior_scale=0.3 if router_prior_scale is None else _number(router_prior_scale,
                                                                                        "router_prior_scale"),
                     seed=seed, schedule=schedule, device=device, checkpoint_dir=checkpoint_dir, out=out,
                     as_json=as_json, threads=threads, overwrite=overwrite)
        return
    if device != "cpu" or checkpoint_dir is not None:
        raise BadInput("--device and --checkpoint-dir are for a shard store's streamed fit (DATA written by "
                       "bayesmicro.write_shards); in-memory fits run on the CPU")
    if data is None and k is not None and k.strip().lower() == "auto":
        raise BadInput("--k auto chooses capacity on DATA's training pairs; the built-in comparison fits given K "
                       "(default 3)", argument="k")
    auto_k = data is not None and (k is None or k.strip().lower() == "auto")
    auto_scale = router_prior_scale is not None and router_prior_scale.strip().lower() == "auto"
    given_scale = None if router_prior_scale is None or auto_scale else _number(router_prior_scale,
                                                                                "router_prior_scale")
    options = dict(restarts=3 if restarts is None else restarts,
                   prior_scale=prior_scale if auto_k or prior_scale is not None else 1.0, keep_restarts=keep_restarts,
                   router_prior_scale=given_scale if auto_k or given_scale is not None else 0.3,
                   inference=inference,
                   schedule=Schedule(optimizer=optimizer, epochs=20 if epochs is None else epochs,
                                     batch_size=512 if batch_size is None else batch_size, lr=lr),
                   **_posterior_schedules(inference, draws, chains, warmup, nuts_mass, guide, router_posterior))
    pairs, drew_split = (None, False) if data is None else _load_split(data, test_fraction, seed)
    router = router or ("context" if data is None else "prompt")
    options["alpha"] = ((None if auto_k else 0.0 if data is None or router in LABEL_ROUTERS else 0.5)
                        if alpha is None else alpha)
    set_threads(threads)
    if auto_k:
        if k_max < 1:
            raise BadInput(f"--k-max must be ≥ 1, got {k_max}")
        if auto_scale:
            raise BadInput("--router-prior-scale auto: --k auto already chooses the router prior scale; give --k "
                           "a number to choose the scale alone")
        options["capacity"] = CapacityGrid(ks=tuple(range(1, k_max + 1)), validate_by=validate_by)
        k = "auto"
    else:
        k = 3 if k is None else _resolve_k(k)
    scale_choice = None
    if auto_scale and router != "none" and not auto_k and k > 1:
        from bayesmicro.evaluate.selection import auto_router_prior_scale

        options["router_prior_scale"], scale_choice = auto_router_prior_scale(
            _selection_pairs(pairs, seed), k=k, router=router, seed=seed, prior_scale=options["prior_scale"],
            alpha=options["alpha"])
    with progress("fitting", None, not as_json) as step:
        if pairs is None:
            results, fits = compare_on_population(seed=seed, k=k, router=router, on_step=step,
                                                  routed_select=select_restart, **options)
            main_fit = fits["routed_mixture"]
        else:
            results, main_fit = _fit_and_score(pairs, k, router, seed, step, {**options, "select": select_restart})
    if auto_k:
        results["capacity"] = main_fit.summary["capacity"]
        warnings = _capacity_warnings(main_fit)
        if warnings:
            results.setdefault("warnings", []).extend(warnings)
    if scale_choice is not None:
        results["router_prior_scale_auto"] = scale_choice
    hint = _static_router_hint(results, main_fit, pairs) if pairs is not None else None
    hint = hint or (None if auto_scale else _memorisation_hint(results, router, k))
    if out is not None:
        results["out"] = str(out)
        with atomic_dir(out, "run", overwrite=overwrite, inputs=(data,)) as tmp:
            main_fit.write_into(tmp)
            if drew_split:
                write_run_split(tmp, pairs, test_fraction, seed)
            write_json(tmp / "metrics.json", results)
    if drew_split:
        kept = f"; recorded in {out / SPLIT_FILE}" if out is not None else ""
        stderr.print(f"{data} has no split column: held out {int((pairs.split == 'test').sum())} of {len(pairs)} "
                     f"pairs at random (--test-fraction {test_fraction}, --seed {seed}){kept}")
    rows = {name: value for name, value in results.items() if isinstance(value, dict) and "accuracy" in value}
    print_table("held-out pairs", rows, ("accuracy", "nll", "brier", "ece", "n"))
    for line in _auto_choice_lines(scale_choice) + _capacity_lines(results.get("capacity")):
        stderr.print(line)
    for line in results.get("warnings", []):
        stderr.print(f"warning: {line}")
    if hint:
        stderr.print(hint)
    if as_json:
        emit_json(results)


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


def _posterior_schedules(inference: str, draws: int | None, chains: int, warmup: int | None, nuts_mass: str,
                         guide: str, router_posterior: str) -> dict:
    """The ``vi`` / ``nuts`` settings of ``fit()`` from the CLI's posterior flags, checked."""
    if chains < 1:
        raise BadInput(f"--chains must be ≥ 1, got {chains}")
    if draws is not None and draws < 1:
        raise BadInput(f"--draws must be ≥ 1, got {draws}")
    if warmup is not None and warmup < 0:
        raise BadInput(f"--warmup must be ≥ 0, got {warmup}")
    if inference in ("vi", "em"):  # em: the same posterior, around the EM optimum
        kept = {} if draws is None else {"draws": draws, "laplace_draws": draws, "refine": RefineSchedule(draws=draws)}
        return {"vi": VISchedule(guide=guide, router_posterior=router_posterior, **kept)}
    if inference == "nuts":
        kept = {} if draws is None else {"draws": draws}
        return {"nuts": NUTSSchedule(chains=chains, warmup=warmup, mass=nuts_mass, **kept)}
    return {}


def _load_split(data: Path, test_fraction: float, seed: int) -> tuple[EmbeddedPairs, bool]:
    """DATA with its own split, or with a random held-out ``test_fraction``; and whether that split was drawn."""
    pairs = EmbeddedPairs.load(data)
    if not 0.0 <= test_fraction < 1.0:
        raise BadInput(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if pairs.split is not None or test_fraction == 0:
        return pairs, False
    return pairs.with_split(test_fraction, seed), True


def _resolve_k(k: str) -> int:
    """``--k`` given as a number."""
    try:
        value = int(k)
    except ValueError:
        raise BadInput(f"k expects a positive integer or 'auto', got {k!r}", argument="k") from None
    return check.integer(value, "k", 1)


def _selection_pairs(pairs: EmbeddedPairs | None, seed: int) -> EmbeddedPairs:
    """The pairs a setting is chosen on (``auto``): the training pairs only, so the run's held-out figures stay
    held out. ``pairs`` None: the built-in population."""
    from bayesmicro.data.synthetic import make_population

    source = make_population(seed=seed)[0] if pairs is None else pairs
    return source if source.split is None else replace(source.part("train"), split=None)


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadInput(f"{name} expects a number or 'auto', got {text!r}", argument=name) from None


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
    if main_fit.config.router != "none" and k > 1 and len(held_out) > 1:
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
    if router in ("none", *LABEL_ROUTERS) or k == 1 or results.get("evaluated_on") != "test" or "train_nll" not in row:
        return None
    gap = row["nll"] - row["train_nll"]
    if gap <= MEMORISATION_GAP:
        return None
    return (f"held-out NLL {row['nll']:.3f} is {gap:.2f} nats above the training NLL {row['train_nll']:.3f}: the "
            "router may be memorising which head fits each training pair; try --router-prior-scale auto")
