"""NUTS over the heads of the summed-out ``BTMixture`` for small problems (the gold standard VI is checked against).

NUTS samples the (K, d) heads and — with ``latent_router`` — the router layers in ``router_layers``: by default every
layer, the exact posterior of the model (static weights for ``none``); ``(2,)`` samples the output layer with the
hidden layer fixed at its MAP value, the posterior ``vi`` targets with ``router_posterior="svi"``.

Why every layer by default: on the built-in population (seed 0; 300 draws after 300 warm-up steps, tree depth 7;
587 s on one CPU thread) its 90 % intervals of P(chosen ≻ rejected) cover the truth on 0.893 of held-out pairs
(ECE 0.0076, NLL 0.2862), where the linearised Laplace around the MAP covers 0.796 (NLL 0.2894) under the same
prior: the posterior's mass lies at sharper routers than its mode (likely because a ReLU router's weight scales
trade off along a ridge that a Gaussian at the mode does not follow; not measured directly).
``chains`` chains run one after another in this process (no worker processes to spawn; deterministic), each with its
own seed (chain 0 keeps the single-chain seed) and started at the MAP values, so the draws stay in one labelling (mode); their draws are
concatenated chain by chain and split-R̂ across them is reported (``Fit`` exports the chain layout to ArviZ).

Mass matrix (``mass``): for routed mixtures the default is a fixed dense inverse mass matrix, the linearised
Laplace covariance (``infer.vi.laplace``) of the sampled sites at the MAP, so warm-up only tunes the step size.
``bayesmicro bench nuts_mass`` on the built-in population (seed 0, one thread, 200 draws, both in one run): 100 warm-up
steps and 387 s gave a smallest head ESS of 186 and a smallest ESS of a held-out P(chosen ≻ rejected) of 81, against
33 and 50 in 355 s with Pyro's diagonal adaptation over 300 warm-up steps (coverage 0.894 vs 0.901, NLL 0.2861 vs
0.2862) — 5.1× / 1.5× the ESS per second. An adapted dense mass matrix (Pyro's ``full_mass``) was far slower: 644 s
for a head ESS of 3 on 1,500 pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value
from pyro.ops.stats import split_gelman_rubin

from bayesmicro.errors import BadInput
from bayesmicro.methods import MassMatrix

from bayesmicro.models.router import HEADS_SITE, LatentRouterMixture, router_draw_tensors
from bayesmicro.infer.vi.laplace import laplace_curvature, supports_laplace
from bayesmicro.models.mixture import BTMixture

NUTS_MAX_PAIRS = 20_000
MASS_MATRICES = tuple(member.value for member in MassMatrix)


@dataclass
class NUTSSchedule:
    draws: int = 400
    warmup: int | None = None  # None: 100 with the Laplace mass matrix (only the step size adapts), 300 with "adapt"
    max_tree_depth: int = 8
    latent_router: bool = True
    chains: int = 1
    router_layers: tuple[int, ...] = (0, 2)  # latent router layers: (0, 2) every layer, (2,) the output layer
    # trace the potential with the PyTorch JIT: the same draws (identical ESS and predictions), 0.71× the time on the
    # built-in population cut to 1,500 pairs (35.6 s vs 50.1 s with the MAP fit) but no faster on all 4,500 (the CLI's
    # built-in comparison: 658 s vs 622 s, identical metrics) — off by default, torch.jit tracing adds a fragile path
    jit: bool = False
    # "laplace": the Laplace covariance as a fixed dense inverse mass matrix (routed mixtures whose router the Laplace
    # supports; others fall back to "adapt"); "adapt": Pyro's diagonal adaptation. ``info["mass"]`` says which ran.
    mass: str = "laplace"

    def __post_init__(self):  # checked when built, not after minutes of MAP restarts
        if self.mass not in MASS_MATRICES:
            raise BadInput(f"mass must be one of {MASS_MATRICES}, got {self.mass!r}")
        if self.chains < 1 or self.draws < 1 or (self.warmup is not None and self.warmup < 0):
            raise BadInput(f"NUTS needs chains ≥ 1, draws ≥ 1, warmup ≥ 0; got chains={self.chains}, "
                           f"draws={self.draws}, warmup={self.warmup}")

    def warmup_steps(self, mass: str) -> int:
        return self.warmup if self.warmup is not None else (100 if mass == MassMatrix.LAPLACE else 300)


def fit_nuts(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, init_heads: torch.Tensor,
             seed: int, schedule: NUTSSchedule | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Sample the heads and the router layers ``schedule.router_layers`` (the rest of the router frozen).

    Returns (head draws (S = chains · draws, K, d), router draws {state key: (S, ...)}, info with the
    smallest ESS of a chain, divergences and, for several chains, the largest split-R̂ of the heads)."""
    schedule = schedule or NUTSSchedule()
    n = diff.shape[0]
    for p in model.router.parameters():
        p.requires_grad_(False)
    use_laplace = schedule.mass == MassMatrix.LAPLACE and schedule.latent_router and supports_laplace(model)
    mass = "laplace" if use_laplace else "adapt"
    inverse_mass = laplace_inverse_mass(model, init_heads, diff, router_x) if use_laplace else None
    wrapped = LatentRouterMixture(model, schedule.latent_router, schedule.router_layers)
    init = {HEADS_SITE: init_heads.detach().clone(), **wrapped.init_values}
    warmup = schedule.warmup_steps(mass)
    runs = [_one_chain(wrapped, init, diff, router_x, n, seed + 1000 * chain, schedule, warmup, inverse_mass)
            for chain in range(schedule.chains)]
    samples = {site: torch.cat([run[0][site] for run in runs]) for site in runs[0][0]}
    heads_ess = [run[1].get(HEADS_SITE, {}).get("n_eff") for run in runs]
    info = {
        "draws": schedule.draws, "warmup": warmup, "chains": schedule.chains,
        "router_layers": list(wrapped.layers), "mass": mass,
        "min_ess": float(min(e.min() for e in heads_ess)) if all(e is not None for e in heads_ess) else None,
        "divergences": int(sum(len(v) for run in runs for v in run[1].get("divergences", {}).values())),
    }
    if schedule.chains > 1:
        stacked = samples[HEADS_SITE].reshape(schedule.chains, schedule.draws, -1)
        info["max_r_hat"] = float(split_gelman_rubin(stacked, chain_dim=0, sample_dim=1).max())
    return samples[HEADS_SITE], router_draw_tensors(samples), info


def laplace_inverse_mass(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor,
                         router_x: torch.Tensor) -> Callable[[tuple[str, ...]], torch.Tensor]:
    """For Pyro's tuple of sampled sites: the Laplace covariance (at the MAP router and ``heads`` (K, d)) of those
    sites with the rest of the router held at the MAP — the inverse of their block of F + Λ — in the tuple's
    order."""
    curv = laplace_curvature(model, heads, diff, router_x)
    precision, slices = curv.precision(), curv.slices()
    positions = torch.arange(curv.theta.numel())

    def for_sites(sites: tuple[str, ...]) -> torch.Tensor:
        keys = ["heads" if site == HEADS_SITE else site.removeprefix("mix.router.") for site in sites]
        idx = torch.cat([positions[slices[key]] for key in keys])
        return torch.cholesky_inverse(torch.linalg.cholesky(precision[idx][:, idx]))

    return for_sites


class GivenMassNUTS(NUTS):
    """NUTS with a fixed dense inverse mass matrix over all its sites, ``inverse_mass(sites)``; warm-up adapts the
    step size only. Pyro takes no starting mass matrix, so it is set where Pyro configures its adapter."""

    def __init__(self, model, inverse_mass: Callable[[tuple[str, ...]], torch.Tensor], **kwargs):
        super().__init__(model, full_mass=True, adapt_mass_matrix=False, **kwargs)
        self._inverse_mass = inverse_mass

    def _initialize_adapter(self):
        super()._initialize_adapter()
        (sites, identity), = self.mass_matrix_adapter.inverse_mass_matrix.items()  # one dense block (full_mass)
        self.mass_matrix_adapter.inverse_mass_matrix = {sites: self._inverse_mass(sites).to(identity)}
        if self._adapter.adapt_step_size:  # the first step size was found under the identity mass matrix
            self._adapter.reset_step_size_adaptation(self._initial_params)


def _one_chain(wrapped, init, diff, router_x, n: int, seed: int, schedule: NUTSSchedule, warmup: int,
               inverse_mass: Callable[[tuple[str, ...]], torch.Tensor] | None):
    """One NUTS chain: ({site: (draws, ...)}, Pyro's diagnostics)."""
    pyro.set_rng_seed(seed)
    options = dict(init_strategy=init_to_value(values=init), max_tree_depth=schedule.max_tree_depth,
                   jit_compile=schedule.jit, ignore_jit_warnings=True)
    kernel = NUTS(wrapped, **options) if inverse_mass is None else GivenMassNUTS(wrapped, inverse_mass, **options)
    mcmc = MCMC(kernel, num_samples=schedule.draws, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(diff, router_x, size=n)
    return {site: v.detach().clone() for site, v in mcmc.get_samples().items()}, mcmc.diagnostics()
