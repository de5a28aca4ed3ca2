"""``fit``: one entry point for every inference method, returning a ``Fit``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.map import Schedule, fit_map_once
from bayesmicro.infer.result import Fit, FitConfig
from bayesmicro.models.mixture import ROUTERS

INFERENCE_METHODS = ("map",)


def fit(
    data: EmbeddedPairs,
    k: int = 3,
    router: str = "prompt",
    inference: str = "map",
    *,
    alpha: float = 0.5,
    prior_scale: float = 1.0,
    hidden: int = 128,
    restarts: int = 3,
    seed: int = 0,
    schedule: Schedule | None = None,
    on_step: Callable[[], None] | None = None,
) -> Fit:
    """Fit a mixture of ``k`` BT heads on the training part of ``data`` (all pairs when there is no split).

    ``router``: ``none`` (static weights), ``prompt`` (paper stage 1) or ``context`` (router on [prompt; context]).
    ``k=1`` is the single BT model. Restarts differ in their seed; the best training log-likelihood is kept.
    """
    config, train = _checked_config(data, k, router, inference, alpha, prior_scale, hidden, seed)
    if restarts < 1:
        raise BadInput(f"restarts must be ≥ 1, got {restarts}")
    schedule = schedule or Schedule()
    diff = train.diff()
    router_x = train.router_input(config.uses_context) if router != "none" and k > 1 else None
    start = time.perf_counter()
    best = None
    history = []
    for restart in range(1 if k == 1 else restarts):
        model = config.build_model()
        heads, loss = fit_map_once(model, diff, router_x, seed * 1000 + restart, schedule, on_step)
        candidate = Fit(config, heads.unsqueeze(0), {k_: v.detach().clone() for k_, v in model.router.state_dict().items()})
        loglik = float(candidate.pointwise_log_lik(train).sum())
        history.append({"restart": restart, "train_loglik": loglik, "loss_per_pair": loss})
        if best is None or loglik > best[0]:
            best = (loglik, candidate)
    loglik, result = best
    result.summary = {
        "train_loglik": loglik,
        "train_pairs": len(train),
        "restarts": history,
        "fit_seconds": time.perf_counter() - start,
    }
    return result


def _checked_config(data, k, router, inference, alpha, prior_scale, hidden, seed):
    if inference not in INFERENCE_METHODS:
        raise BadInput(f"inference must be one of {INFERENCE_METHODS}, got {inference!r}")
    if router not in ROUTERS:
        raise BadInput(f"router must be one of {ROUTERS}, got {router!r}")
    if k < 1:
        raise BadInput(f"k must be ≥ 1, got {k}")
    if not (math.isfinite(prior_scale) and prior_scale > 0):
        raise BadInput(f"prior_scale must be a finite number > 0, got {prior_scale}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise BadInput(f"alpha must be a finite number ≥ 0, got {alpha}")
    if hidden < 1:
        raise BadInput(f"hidden must be ≥ 1, got {hidden}")
    train = data.part("train")
    if k > len(train):
        raise BadInput(f"k = {k} is larger than the number of training pairs ({len(train)})", source=data.source)
    if not bool(train.diff().any()):
        raise BadInput("every training pair has chosen == rejected features (expected at least one pair whose "
                       "responses differ; ties carry no preference)", source=data.source)
    if router == "context" and data.context is None:
        raise BadInput("router 'context' needs a 'context' feature matrix, and these pairs have none",
                       source=data.source)
    router = router if k > 1 else "none"  # a single head has nothing to route
    router_dim = 0 if router == "none" else data.prompt_dim + (data.context_dim if router == "context" else 0)
    config = FitConfig(k=k, router=router, dim=data.dim, router_dim=router_dim, hidden=hidden,
                       prior_scale=prior_scale, alpha=alpha, inference=inference, seed=seed)
    return config, train
