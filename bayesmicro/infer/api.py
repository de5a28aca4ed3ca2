"""``fit``: one entry point for every inference method, returning a ``Fit``."""

from __future__ import annotations

import contextlib
from dataclasses import replace
import time
from collections.abc import Callable, Iterator

import torch

from bayesmicro import _check as check
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.capacity import CapacityGrid, choose_capacity
from bayesmicro.infer.em import EMSchedule
from bayesmicro.infer.vi.laplace import mode_log_evidence
from bayesmicro.infer.map import Schedule, distinct_rows, fit_map_once, full_batch_cost
from bayesmicro.infer.nuts import NUTSSchedule
from bayesmicro.infer.registry import FITTERS, fitter_for
from bayesmicro.infer.results.mixture import LINEARISED_POSTERIORS, Fit, FitConfig
from bayesmicro.infer.vi import GUIDES, ROUTER_POSTERIORS, VISchedule
from bayesmicro.methods import RestartSelect, Router
from bayesmicro.models.mixture import LABEL_ROUTERS, ROUTERS, BTMixture

INFERENCE_METHODS = tuple(member.value for member in FITTERS)
RESTART_SELECT = tuple(member.value for member in RestartSelect)
SELECTION_TOL = 1e-5  # the candidates k="auto" compares stop earlier than the final fit (Schedule.tol)
# Beyond this |chosen − rejected| the Fisher (∝ n·Δ²) can outgrow the unit prior precision past float64's ~1e16
# condition limit, so a failed Cholesky or solve there is the features' scale, not a bug.
FACTORISABLE_FEATURE_SCALE = 1e6


def fit(
    data: EmbeddedPairs,
    k: int | str = "auto",
    router: str = "prompt",
    inference: str = "map",
    *,
    alpha: float | None = None,
    prior_scale: float | None = None,
    router_prior_scale: float | None = None,
    hidden: int = 128,
    restarts: int = 3,
    seed: int = 0,
    schedule: Schedule | None = None,
    on_step: Callable[[], None] | None = None,
    vi: VISchedule | None = None,
    nuts: NUTSSchedule | None = None,
    em: EMSchedule | None = None,
    select: str = "loglik",
    keep_restarts: bool = False,
    capacity: CapacityGrid | None = None,
) -> Fit:
    """Fit a mixture of ``k`` BT heads on the training part of ``data`` (all pairs when there is no split).

    ``router``: ``none`` (static weights), ``prompt`` (paper stage 1), ``context`` (router on [prompt; context]),
    or ``user`` / ``group`` (router on the one-hot of each pair's label, coded by the training pairs' labels and
    kept in the run: each user's or group's own mixture weights; a label the run has not seen reads zeros).
    ``prior_scale``: sd of the Gaussian prior on the head weights; ``router_prior_scale``: sd of the Gaussian prior
    on the router network's weights (smaller: a smoother router that cannot memorise which head fits each pair).
    ``alpha``: the paper's router-entropy regulariser (default 0.5; 0 for the label routers, where it would hold
    every user's weights at uniform). ``k=1`` is the single BT model. Restarts differ in their seed; the best
    training log-likelihood is kept; ``select="evidence"``: the largest Laplace evidence (the mode with the most
    posterior mass, which penalises a router that memorises pairs: on hh with 8 restarts it lowered the held-out NLL
    0.719 → 0.703; ``bayesmicro bench hh_optima``), recorded per restart as ``log_evidence``.
    ``keep_restarts``: keep every restart's MAP in ``Fit.restart_modes`` (saved as ``restarts/<r>/``), for stage 2
    to choose among with its labelled pairs (``routing.choose_restart``).

    ``k="auto"`` (the default): K (1 included), and each of ``prior_scale``, ``router_prior_scale`` and ``alpha``
    left at None, are chosen by the validation log-likelihood of MAP fits on part of the training pairs
    (``infer.capacity``; grid and validation units in ``capacity``), then the chosen setting is fitted on every
    training pair; the choice and its validation table are in ``summary["capacity"]``. With an integer K, None means
    prior_scale 1, router_prior_scale 0.3.
    The default grid tries K = 1..5, as ``bayesmicro fit --k auto`` (``--k-max 5``).

    The defaults are those of ``bayesmicro fit`` with DATA (k 'auto', router 'prompt', 3 restarts, seed 0, loglik
    selection, the ``Schedule()`` optimizer settings: auto, 20 AdamW epochs of 512 pairs at lr 2e-3). One difference:
    ``fit`` trains on ``data``'s training part as given, and the command first draws a held-out 0.2 (``--seed``)
    for DATA without a split column: ``data.with_split()`` draws the same one. ``bayesmicro.run(FitJobConfig(...))``
    runs the whole command (split, fit, scores, run folder).

    ``inference``: ``map`` (one draw); ``vi`` (from the best MAP restart; routed mixtures: a Gaussian over the heads
    and every router layer with the router linearised at the MAP — Laplace covariance, ELBO-optimal mean —, its
    draws then moved toward the exact posterior by HMC transitions (``vi.router_posterior="refined"``, the default;
    ``"linearised"``: the Gaussian alone); else SVI
    over the heads — and with ``router_posterior="svi"`` the router output layer, its hidden layer learned jointly;
    settings in ``vi``); ``nuts`` (NUTS over the heads and
    every router layer — ``nuts.router_layers=(2,)``: the output layer, the hidden one fixed at the MAP; small
    problems; ``nuts.chains`` chains); ``em`` (EM
    restarts instead of gradient restarts for the mode, then the same posterior as ``vi`` around the EM optimum;
    ``em.posterior=False``: the optimum alone).
    """
    if not isinstance(data, EmbeddedPairs):
        raise BadInput(f"data must be EmbeddedPairs (bayesmicro.load_embedded / EmbeddedPairs.load), got "
                       f"{type(data).__name__}", argument="data")
    router = check.choice(router, "router", ROUTERS)
    if isinstance(k, str):
        return _fit_auto(data, k, router, inference, alpha=alpha, prior_scale=prior_scale,
                         router_prior_scale=router_prior_scale, hidden=hidden, restarts=restarts, seed=seed,
                         schedule=schedule, on_step=on_step, vi=vi, nuts=nuts, em=em, select=select,
                         keep_restarts=keep_restarts, capacity=capacity)
    if alpha is None:
        alpha = 0.0 if router in LABEL_ROUTERS else 0.5
    prior_scale = 1.0 if prior_scale is None else prior_scale
    router_prior_scale = 0.3 if router_prior_scale is None else router_prior_scale
    config, n_train, diff, router_x = _checked_config(data, k, router, inference, alpha, prior_scale, hidden, seed,
                                                      router_prior_scale)
    restarts, vi = _checked_options(restarts, schedule, vi, nuts, em, on_step)
    keep_restarts = bool(keep_restarts)
    fitter_for(inference).check_size(n_train)
    _check_select(select, config)
    start = time.perf_counter()
    kept, result, history, modes, single = _best_mode(config, diff, router_x, restarts, inference, seed,
                                                      schedule or Schedule(), em, on_step, select)
    extra = {}
    if fitter_for(inference).draws_posterior(em):
        result, extra = _posterior_around(result, diff, router_x, inference, seed, vi, nuts, on_step)
    result.summary = {
        "train_loglik": kept["train_loglik"],
        "train_pairs": n_train,
        "restarts": history,
        "restart_select": select,
        "fit_seconds": time.perf_counter() - start,
        **{key: kept[key] for key in ("converged", "iterations", "objective") if key in kept},
    }
    if single is not None:
        result.summary["single_bt"] = single
    if keep_restarts:  # fresh Fits: the kept candidate may be ``result`` itself, whose summary was just replaced
        result.restart_modes = [Fit(config, mode.heads, mode.router_state, dict(record))
                                for mode, record in zip(modes, history)]
    if data.meta.get("embedding"):  # lets a run re-embed new text the same way (score, TRL reward, export)
        result.summary["embedding"] = data.meta["embedding"]
    if extra:
        result.summary[inference] = extra
        result.summary["posterior_draws"] = result.n_draws
    return result


def _checked_options(restarts, schedule, vi, nuts, em, on_step) -> tuple[int, VISchedule]:
    """The restart count and the VI settings, checked (with the schedules' types) before any fit runs."""
    restarts = check.integer(restarts, "restarts", 1)
    for name, value, kind in (("schedule", schedule, Schedule), ("vi", vi, VISchedule), ("nuts", nuts, NUTSSchedule),
                              ("em", em, EMSchedule)):
        if value is not None and not isinstance(value, kind):
            raise BadInput(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}", argument=name)
    if on_step is not None and not callable(on_step):
        raise BadInput(f"on_step must be callable or None, got {type(on_step).__name__}", argument="on_step")
    vi = vi or VISchedule()
    if vi.guide not in GUIDES:  # checked before the MAP restarts, not minutes later
        raise BadInput(f"guide must be one of {GUIDES}, got {vi.guide!r}")
    if vi.router_posterior not in ROUTER_POSTERIORS:
        raise BadInput(f"router_posterior must be one of {ROUTER_POSTERIORS}, got {vi.router_posterior!r}")
    return restarts, vi


def _fit_auto(data: EmbeddedPairs, k: str, router: str, inference: str, *, alpha, prior_scale, router_prior_scale,
              hidden: int, restarts: int, seed: int, schedule: Schedule | None, capacity: CapacityGrid | None,
              **options) -> Fit:
    """``fit(k="auto")``: choose the capacity on the training pairs (``infer.capacity``), then fit it on all of them."""
    if k != "auto":
        raise BadInput(f"k must be an integer ≥ 1 or 'auto', got {k!r}", argument="k")
    _checked_options(restarts, schedule, options["vi"], options["nuts"], options["em"], options["on_step"])
    train_rows = data.part_rows("train")
    largest_k = min(max((capacity or CapacityGrid()).ks), len(data) if train_rows is None else len(train_rows))
    largest, _, diff, router_x = _checked_config(data, largest_k, router, inference, 0.0 if alpha is None else alpha,
                                                 1.0 if prior_scale is None else prior_scale, hidden, seed,
                                                 0.3 if router_prior_scale is None else router_prior_scale)
    fixed = {name: value for name, value in (("prior_scale", prior_scale), ("router_prior_scale", router_prior_scale),
                                             ("alpha", alpha)) if value is not None}
    if router in LABEL_ROUTERS:
        fixed.setdefault("alpha", 0.0)  # α > 0 holds every label's weights at uniform
    if router == Router.NONE:
        fixed.setdefault("router_prior_scale", 0.3)

    def fit_on(pairs: EmbeddedPairs, **settings) -> Fit:
        return fit(pairs, inference="map", restarts=1, seed=seed, hidden=hidden, schedule=selection, **settings)

    # one optimizer for the candidates and the final fit: the one the largest K on all the training pairs resolves to
    schedule = schedule or Schedule()
    cost = full_batch_cost(largest.build_model(), diff, distinct_rows(router_x)[0])
    schedule = replace(schedule, optimizer=schedule.resolve(cost))
    selection = replace(schedule, tol=SELECTION_TOL)

    chosen, report = choose_capacity(data, fit_on, router, seed, capacity, fixed)
    result = fit(data, chosen.pop("k"), router, inference, hidden=hidden, restarts=restarts, seed=seed,
                 schedule=schedule, **chosen, **options)
    result.summary["capacity"] = report
    return result


def _check_select(select: str, config: FitConfig) -> None:
    if select not in RESTART_SELECT:
        raise BadInput(f"select must be one of {RESTART_SELECT}, got {select!r}")
    if select == RestartSelect.EVIDENCE and (config.k < 2 or config.router == Router.NONE):
        raise BadInput("select='evidence' compares the Laplace evidence of a routed mixture's restarts (k ≥ 2 and a "
                       f"router that reads its input); got k={config.k}, router={config.router!r}")


def _best_mode(config: FitConfig, diff: torch.Tensor, router_x: torch.Tensor | None, restarts: int, inference: str,
               seed: int, schedule: Schedule, em: EMSchedule | None,
               on_step: Callable[[], None] | None,
               select: str = "loglik") -> tuple[dict, Fit, list[dict], list[Fit], dict | None]:
    """The MAP (``inference="em"``: EM) restart with the best training log-likelihood (``select="evidence"``: the
    largest Laplace evidence): (its record — training log-likelihood, optimisation —, its one-draw Fit, a record per restart, every
    restart's one-draw Fit, the single-BT record or None). diff: (n, d); router_x: (n, d_r) or None.

    A mixture's MAP restarts start from the single-BT MAP (fitted first, same head prior): identical heads give the
    single BT's likelihood whatever the router, so the optimisation starts where K = 1 ends."""
    best, history, modes = None, [], []
    single, start = None, None
    fitter = fitter_for(inference)
    if config.k > 1 and fitter.starts_from_single_bt:
        start, info = fit_map_once(replace(config, k=1, router="none", router_dim=0).build_model(), diff, None,
                                   seed * 1000, schedule, on_step)
        single = {"train_loglik": float(torch.nn.functional.logsigmoid(diff @ start[0]).sum()), **info.record}
    for restart in range(1 if config.k == 1 else restarts):
        model = fitter.build_model(config, seed, restart)
        heads, optimisation = fitter.find_mode(model, diff, router_x, seed=seed, restart=restart, schedule=schedule,
                                               em=em, on_step=on_step, start=start)
        router_state = {k_: v.detach().clone() for k_, v in model.router.state_dict().items()}
        candidate = Fit(config, heads.unsqueeze(0), router_state)
        loglik = float(candidate.log_lik_from(diff, router_x).sum())
        record = {"restart": restart, "train_loglik": loglik, **optimisation}
        if select == RestartSelect.EVIDENCE:
            record["log_evidence"] = _log_evidence(model, heads, diff, router_x)
        history.append(record)
        modes.append(candidate)
        key = record["log_evidence" if select == RestartSelect.EVIDENCE else "train_loglik"]
        if best is None or key > best[0]:
            best = (key, record, candidate)
    return best[1], best[2], history, modes, single


def _log_evidence(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor) -> float:
    try:
        return mode_log_evidence(model, heads, diff, router_x)
    except ValueError as err:
        raise BadInput(f"select='evidence': {err}; use select='loglik'") from None


def _posterior_around(mode: Fit, diff: torch.Tensor, router_x: torch.Tensor | None, inference: str, seed: int,
                      vi: VISchedule, nuts: NUTSSchedule | None,
                      on_step: Callable[[], None] | None) -> tuple[Fit, dict]:
    """Posterior draws started from the one-draw ``mode`` (NUTS, else the VI ``vi`` selects), and the method's info."""
    model = mode.mode_model()
    with _feature_scale_blamed(inference, diff):
        draws, router_draws, extra = fitter_for(inference).draw_posterior(model, diff, router_x, mode.heads[0], seed,
                                                                          vi, nuts, on_step)
    router_state = {k_: v.detach().clone() for k_, v in model.router.state_dict().items()}
    if extra.get("router_posterior") not in LINEARISED_POSTERIORS:  # those keep the MAP: their linearisation point
        router_state.update({k_: v.mean(0) for k_, v in router_draws.items()})  # the point router: posterior mean
    return Fit(mode.config, draws, router_state, router_draws=router_draws), extra


@contextlib.contextmanager
def _feature_scale_blamed(inference: str, diff: torch.Tensor) -> Iterator[None]:
    """Turn a failed factorisation on features beyond ``FACTORISABLE_FEATURE_SCALE`` into a ``BadInput``."""
    try:
        yield
    except torch.linalg.LinAlgError:
        scale = float(diff.abs().max())
        if scale <= FACTORISABLE_FEATURE_SCALE:
            raise
        raise BadInput(f"inference '{inference}' cannot factor the posterior curvature in float64: the features are "
                       f"too large (|chosen − rejected| reaches {scale:.3g}; expected values of order 1 — standardise "
                       "the features, or fit with --inference map)") from None


def refit_like(original: Fit, data: EmbeddedPairs, draws: int | None = None, refine_target: str = "posterior") -> Fit:
    """``fit`` on ``data`` with ``original``'s recorded settings: its config (K, router, inference, priors, α,
    seed), restart count and posterior (VI kind and draw count; NUTS draws, warm-up, chains, router layers and mass
    matrix) — the refits of exact leave-one-out (``evaluate.loo.reloo``). Settings a run does not record (SVI steps,
    learning rates, NUTS tree depth) take their defaults. ``draws``: keep that many VI / Laplace draws instead;
    ``refine_target``: what a refined VI's chains sample (``RefineSchedule.target``)."""
    cfg = original.config
    info = original.summary.get(cfg.inference) if isinstance(original.summary, dict) else None
    info = info if isinstance(info, dict) else {}
    schedules = fitter_for(cfg.inference).recorded_schedules(original, info, draws, refine_target)
    summary = original.summary if isinstance(original.summary, dict) else {}
    restarts = len(summary.get("restarts") or [])
    return fit(data, k=cfg.k, router=cfg.router, inference=cfg.inference, alpha=cfg.alpha,
               prior_scale=cfg.prior_scale, router_prior_scale=cfg.router_prior_scale, hidden=cfg.hidden,
               restarts=restarts or 3, seed=cfg.seed, select=summary.get("restart_select", "loglik"),
               **schedules)


def _checked_config(data, k, router, inference, alpha, prior_scale, hidden, seed, router_prior_scale=0.3):
    """Check the settings against ``data``; returns (config, the number of training pairs, their diff (n, d), what
    the router reads of them (n, d_r) or None) — gathered from ``data`` without copying the training pairs first."""
    inference = check.choice(inference, "inference", INFERENCE_METHODS)
    router = check.choice(router, "router", ROUTERS)
    k = check.integer(k, "k", 1)
    prior_scale = check.number(prior_scale, "prior_scale", 0, low_open=True)
    router_prior_scale = check.number(router_prior_scale, "router_prior_scale", 0, low_open=True)
    alpha = check.number(alpha, "alpha", 0)
    hidden = check.integer(hidden, "hidden", 1)
    seed = check.seed(seed)
    rows = data.part_rows("train")
    n_train = len(data) if rows is None else len(rows)
    if k > n_train:
        raise BadInput(f"k = {k} is larger than the number of training pairs ({n_train})", source=data.source)
    diff = data.diff(rows)
    if not int(torch.count_nonzero(diff)):  # one pass, ~3x faster than Tensor.any on a float matrix
        raise BadInput("every training pair has chosen == rejected features (expected at least one pair whose "
                       "responses differ; ties carry no preference)", source=data.source)
    if router == Router.CONTEXT and data.context is None:
        raise BadInput("router 'context' needs a 'context' feature matrix, and these pairs have none",
                       source=data.source)
    if router in LABEL_ROUTERS and getattr(data, router) is None:
        raise BadInput(f"router '{router}' reads each pair's '{router}' label, and these pairs have none",
                       source=data.source)
    router = router if k > 1 else Router.NONE.value  # a single head has nothing to route
    levels = tuple(data.label_levels(router, rows)) if router in LABEL_ROUTERS else None
    router_dim = (0 if router == Router.NONE else len(levels) if levels is not None
                  else data.prompt_dim + (data.context_dim if router == Router.CONTEXT else 0))
    config = FitConfig(k=k, router=router, dim=data.dim, router_dim=router_dim, hidden=hidden,
                       prior_scale=prior_scale, alpha=alpha, inference=inference, seed=seed,
                       router_prior_scale=router_prior_scale, router_levels=levels)
    return config, n_train, diff, config.router_input(data, rows)
