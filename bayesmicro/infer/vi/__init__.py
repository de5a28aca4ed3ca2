"""Variational inference over the heads and the router: this package holds its variants — ``vi.laplace`` (the
Gaussian at the MAP, and the Laplace evidence), ``vi.linearised`` (the linearised VI), ``vi.refine`` (its draws moved by
HMC) — and here, the choice among them (``fit_vi``) and SVI.

For routed mixtures, by default, the refined VI: the
linearised VI — a Gaussian over the heads and every router layer with the router linearised at the MAP, the Laplace
covariance and the ELBO-optimal mean (``router_posterior="linearised"``, ``infer.vi.linearised``) — whose draws HMC
transitions that leave the exact posterior invariant then move (``"refined"``, ``infer.vi.refine``: NUTS's calibration at
a few times the linearised VI's time, and heavier-tailed PSIS ratios); ``"laplace"`` keeps the Gaussian's mean at the
MAP (``infer.vi.laplace``); ``"svi"`` is SVI over the heads and the router's output layer.

Why not SVI by default: with SVI the router's hidden layer stays a point estimate learned jointly (type-II MAP),
and the 90 % credible intervals of P(chosen ≻ rejected) then ignore most of the router's error (coverage ~0.71 on
the built-in population; the Laplace 0.79, the linearised VI 0.85, refined 0.90 as NUTS); see ``infer.vi.laplace``,
``infer.vi.linearised`` and ``infer.vi.refine``.

The model is the summed-out ``BTMixture``; its router is an ordinary module parameter, so one ``Trace_ELBO()(model,
guide)`` loss trains the guide's variational parameters and the router together with a torch optimizer. The guide
is ``AutoNormal`` (mean field) or ``AutoLowRankMultivariateNormal`` over the (K, d) heads, started at the MAP heads
(which also fixes the labelling: a unimodal guide never switches labels, so its draws share one labelling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from bayesmicro.errors import BadInput, warn
from bayesmicro.models.router import HEADS_SITE, LatentRouterMixture, router_draw_tensors
from bayesmicro.infer.vi.laplace import laplace_posterior, supports_laplace
from bayesmicro.infer.vi.linearised import linearised_vi_posterior
from bayesmicro.infer.map import per_pair_loss
from bayesmicro.infer.vi.refine import RefineSchedule, refined_vi_posterior
from bayesmicro.methods import Guide, RouterPosterior
from bayesmicro.models.mixture import BTMixture

GUIDES = tuple(member.value for member in Guide)
ROUTER_POSTERIORS = tuple(member.value for member in RouterPosterior)
GUIDE_CLASSES = {Guide.NORMAL: AutoNormal, Guide.LOWRANK: AutoLowRankMultivariateNormal}  # Guide → autoguide
FULL_BATCH_PAIRS = 50_000  # above this, SVI steps use minibatches scaled to the full data


@dataclass
class VISchedule:
    """SVI settings. ``steps`` Adam steps with cosine decay; ``particles`` ELBO samples per step."""

    guide: str = "lowrank"  # measured on the built-in population: no PSIS k > 0.7 (mean field: a few)
    steps: int = 600
    lr: float = 0.02
    particles: int = 2
    rank: int | None = None  # low-rank guide rank (default: min(K·d, 10))
    batch_size: int = 4096
    draws: int = 1000  # posterior draws kept in the Fit (PSIS-LOO needs many: Pareto-k is noisy with few)
    latent_router: bool = True  # SVI: the router's output layer gets a posterior (False: point estimate)
    # routed mixtures: "refined" (the linearised VI's draws moved by HMC on the exact network, ``refine``: NUTS's
    # posterior at a fraction of its time), "linearised" (every router layer + heads, router linearised at the MAP,
    # Laplace covariance, ELBO-optimal mean), "laplace" (the same Gaussian centred on the MAP) or "svi" (SVI over the
    # heads and the router output layer). Problems too large for the Laplace curvature use "svi"; "refined" above
    # ``refine.max_pairs`` training pairs, "linearised".
    router_posterior: str = "refined"
    refine: RefineSchedule = field(default_factory=RefineSchedule)
    mc_draws: int = 64  # "linearised": antithetic draws averaged in the ELBO the mean maximises
    # Draws of the linearised posteriors are cheap, and PSIS-LOO's Pareto-k needs many over 2 611 parameters: on the
    # built-in population (Laplace, seed 0) 1 000 draws gave 10 pairs with k > 0.7, 2 000 gave 5, 4 000 none (max
    # 0.67). Seeds 1 and 2 still have 4 pairs each in (0.7, 0.76] at 4 000; 8 000 cleared seed 1 (max 0.67) but not
    # seed 2 (2 pairs, max 0.77), at twice the cost of every prediction (router draws are evaluated one by one): the
    # default stays 4 000, and ``evaluate.loo.reloo`` redoes PSIS on 4× the draws for the few pairs above 0.7.
    laplace_draws: int = 4000


def make_guide(model, kind: str, init_values: dict[str, torch.Tensor], rank: int | None = None):
    """An autoguide over the model's latent sites started at ``init_values`` with a small initial scale."""
    init = init_to_value(values={k: v.detach().clone() for k, v in init_values.items()})
    scale = 0.01
    if kind not in GUIDE_CLASSES:
        raise ValueError(f"guide must be one of {GUIDES}, got {kind!r}")
    options = {}
    if kind == Guide.LOWRANK:  # the one guide with a rank
        options["rank"] = rank or min(sum(v.numel() for v in init_values.values()), 10)
    return GUIDE_CLASSES[Guide(kind)](model, init_loc_fn=init, init_scale=scale, **options)


def fit_vi(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, init_heads: torch.Tensor,
           seed: int, schedule: VISchedule | None = None,
           on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Run SVI in place on ``model`` (its router should hold the MAP router), or the Laplace (see ``VISchedule``).

    diff: (n, d); router_x: (n, d_r) or None. Returns (head draws (S, K, d), router draws {state key: (S, ...)} —
    empty for a point-estimate router —, info: the final ELBO per pair and the guide, or the Laplace's evidence).
    """
    schedule = schedule or VISchedule()
    if schedule.router_posterior not in ROUTER_POSTERIORS:
        raise BadInput(f"router_posterior must be one of {ROUTER_POSTERIORS}, got {schedule.router_posterior!r}")
    n = diff.shape[0]
    kind = RouterPosterior(schedule.router_posterior)
    if kind != RouterPosterior.SVI and model.router.reads_input and model.k > 1 and not supports_laplace(model):
        warn(f"router_posterior '{schedule.router_posterior}' needs the Laplace curvature of the router, and this "
             f"one has too many parameters (router input of {diff.shape[1] if router_x is None else router_x.shape[1]}"
             " columns): using SVI over the heads and the router output layer instead (router_posterior 'svi')")
    if kind != RouterPosterior.SVI and supports_laplace(model):
        if kind == RouterPosterior.LAPLACE:
            return laplace_posterior(model, init_heads, diff, router_x, schedule.laplace_draws, seed)
        if kind == RouterPosterior.REFINED and n <= schedule.refine.max_pairs:
            return refined_vi_posterior(model, init_heads, diff, router_x, seed, schedule.mc_draws, schedule.refine)
        heads, router_draws, info = linearised_vi_posterior(model, init_heads, diff, router_x,
                                                            schedule.laplace_draws, seed, schedule.mc_draws)
        if kind == RouterPosterior.REFINED:
            info["refine_skipped"] = f"{n} training pairs > refine.max_pairs = {schedule.refine.max_pairs}"
            warn(f"router_posterior 'refined': {info['refine_skipped']}, using the linearised posterior instead")
        return heads, router_draws, info
    pyro.set_rng_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    wrapped = LatentRouterMixture(model, schedule.latent_router)
    guide = make_guide(wrapped, schedule.guide, {HEADS_SITE: init_heads, **wrapped.init_values}, schedule.rank)
    elbo = Trace_ELBO(num_particles=schedule.particles)(wrapped, guide)
    loss_on = per_pair_loss(elbo, diff, router_x)
    params = [p for p in elbo.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=schedule.lr)
    total = schedule.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / total)))
    tail, tail_len = 0.0, max(1, total // 10)
    for step in range(total):
        idx = None if n <= FULL_BATCH_PAIRS else torch.randint(0, n, (schedule.batch_size,), generator=gen)
        opt.zero_grad()
        loss = loss_on(idx)
        loss.backward()
        opt.step()
        sched.step()
        if step >= total - tail_len:
            tail += float(loss.detach()) / tail_len
        if on_step and step % 100 == 0:
            on_step()
    with torch.no_grad():
        samples = [guide(diff[:1], None if router_x is None else router_x[:1], size=n) for _ in range(schedule.draws)]
        samples = {site: torch.stack([s[site] for s in samples]).detach().clone() for site in samples[0]}
    info = {"elbo_per_pair": -tail, "guide": schedule.guide, "steps": total, "latent_router": wrapped.latent_router,
            "router_posterior": "svi"}
    return samples[HEADS_SITE], router_draw_tensors(samples), info
