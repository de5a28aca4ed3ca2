"""NUTS over the heads of the summed-out ``BTMixture`` for small problems (the gold standard VI is checked against).

The router's hidden layer is held fixed at its MAP value (static weights for ``none``); NUTS samples the (K, d) heads
and — with ``latent_router`` — the router's output layer, the same posterior as ``vi`` targets. One chain, started
at the MAP values, so the draws stay in one labelling (mode); ``evaluate.alignment`` aligns several chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from bayesmicro.infer.bayes_router import HEADS_SITE, LatentRouterMixture, router_draw_tensors
from bayesmicro.models.mixture import BTMixture

NUTS_MAX_PAIRS = 20_000


@dataclass
class NUTSSchedule:
    draws: int = 400
    warmup: int = 300
    max_tree_depth: int = 8
    latent_router: bool = True


def fit_nuts(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, init_heads: torch.Tensor,
             seed: int, schedule: NUTSSchedule | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Sample the heads (and the router output layer) with the rest of the router frozen.

    Returns (head draws (S, K, d), router output-layer draws {state key: (S, ...)}, info with ESS/divergences)."""
    schedule = schedule or NUTSSchedule()
    n = diff.shape[0]
    for p in model.router.parameters():
        p.requires_grad_(False)
    pyro.set_rng_seed(seed)
    wrapped = LatentRouterMixture(model, schedule.latent_router)
    init = {HEADS_SITE: init_heads.detach().clone(), **wrapped.init_values}
    kernel = NUTS(wrapped, init_strategy=init_to_value(values=init),
                  max_tree_depth=schedule.max_tree_depth, jit_compile=False)
    mcmc = MCMC(kernel, num_samples=schedule.draws, warmup_steps=schedule.warmup, disable_progbar=True)
    mcmc.run(diff, router_x, size=n)
    samples = {site: v.detach().clone() for site, v in mcmc.get_samples().items()}
    diagnostics = mcmc.diagnostics()
    heads_diag = diagnostics.get(HEADS_SITE, {})
    info = {
        "draws": schedule.draws, "warmup": schedule.warmup,
        "min_ess": float(heads_diag["n_eff"].min()) if "n_eff" in heads_diag else None,
        "divergences": int(sum(len(v) for v in diagnostics.get("divergences", {}).values())),
    }
    return samples[HEADS_SITE], router_draw_tensors(samples), info
