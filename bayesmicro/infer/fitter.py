"""Inference methods as types: one interface, ``Fitter.fit(data, config) -> Posterior``, implemented by MAP, EM, VI
(its guides and router posteriors are variants of one class, chosen by ``VISchedule``), NUTS and the streamed
fitter. ``infer.registry`` maps each ``methods.Inference`` member to its class; ``infer.api.fit`` asks the registry
instead of comparing method names.

A method has two steps: the mode (MAP or EM restarts, ``find_mode``) and, for the Bayesian ones, draws around it
(``draw_posterior``). ``fit`` runs the whole pipeline through ``infer.api.fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from bayesmicro.errors import BadInput
from bayesmicro.methods import Inference

if TYPE_CHECKING:
    from bayesmicro.data.embedded import EmbeddedPairs
    from bayesmicro.infer.em import EMSchedule
    from bayesmicro.infer.map import Schedule
    from bayesmicro.infer.nuts import NUTSSchedule
    from bayesmicro.infer.results.mixture import Fit, FitConfig
    from bayesmicro.infer.vi import VISchedule
    from bayesmicro.models.mixture import BTMixture


class Fitter:
    """One inference method. Subclasses set ``inference`` and override the steps that differ from MAP's."""

    inference: ClassVar[Inference] = Inference.MAP
    starts_from_single_bt: ClassVar[bool] = True  # a mixture's restarts start from the single-BT MAP

    def fit(self, data: "EmbeddedPairs", config: "FitConfig", **options: Any) -> "Fit":
        """Fit ``config``'s model (K, router, priors, α, hidden, seed) on ``data`` with this method."""
        from bayesmicro.infer.api import fit

        return fit(data, k=config.k, router=config.router, inference=self.inference, alpha=config.alpha,
                   prior_scale=config.prior_scale, router_prior_scale=config.router_prior_scale,
                   hidden=config.hidden, seed=config.seed, **options)

    def check_size(self, n_train: int) -> None:
        """Refuse problems the method cannot handle (before any restart runs)."""

    def build_model(self, config: "FitConfig", seed: int, restart: int) -> "BTMixture":
        """The model one restart optimises."""
        return config.build_model()

    def find_mode(self, model: "BTMixture", diff: torch.Tensor, router_x: torch.Tensor | None, *, seed: int,
                  restart: int, schedule: "Schedule", em: "EMSchedule | None", on_step: Callable[[], None] | None,
                  start: Any) -> tuple[torch.Tensor, dict]:
        """One restart's mode, in place on ``model``'s router: (heads (K, d), the optimisation record)."""
        from bayesmicro.infer.map import fit_map_once

        heads, info = fit_map_once(model, diff, router_x, seed * 1000 + restart, schedule, on_step, start)
        return heads, {"loss_per_pair": info.objective, **info.record}

    def draws_posterior(self, em: "EMSchedule | None") -> bool:
        """Whether posterior draws follow the mode."""
        return False

    def draw_posterior(self, model: "BTMixture", diff: torch.Tensor, router_x: torch.Tensor | None,
                       heads: torch.Tensor, seed: int, vi: "VISchedule", nuts: "NUTSSchedule | None",
                       on_step: Callable[[], None] | None) -> tuple[torch.Tensor, dict, dict]:
        """(head draws (S, K, d), router draws, info) around the mode ``heads``."""
        raise TypeError(f"inference '{self.inference}' keeps the mode alone: it draws no posterior "
                        "(draws_posterior is False)")

    def recorded_schedules(self, original: "Fit", info: dict, draws: int | None, refine_target: str) -> dict:
        """The posterior settings ``original`` recorded, as ``fit`` keyword arguments (for refits)."""
        return {}


class MAPFitter(Fitter):
    """The MAP: the best of ``restarts`` optimisations (one draw)."""

    inference = Inference.MAP


class EMFitter(Fitter):
    """EM restarts for the mode, then (``EMSchedule.posterior``) the VI posterior around the EM optimum."""

    inference = Inference.EM
    starts_from_single_bt = False

    def build_model(self, config, seed, restart):
        torch.manual_seed(seed * 1000 + restart)  # EM keeps the router's initial weights, drawn from the global RNG
        return config.build_model()

    def find_mode(self, model, diff, router_x, *, seed, restart, schedule, em, on_step, start):
        from bayesmicro.infer.api import _feature_scale_blamed
        from bayesmicro.infer.em import fit_em_once
        from bayesmicro.infer.map import initial_heads

        gen = torch.Generator().manual_seed(seed * 1000 + restart)
        with _feature_scale_blamed(self.inference, diff):
            heads, info = fit_em_once(model, diff, router_x, initial_heads(model.k, diff, gen), em, on_step)
        return heads, {"loss_per_pair": -info["objective_per_pair"]}

    def draws_posterior(self, em):
        from bayesmicro.infer.em import EMSchedule

        return (em or EMSchedule()).posterior

    def draw_posterior(self, model, diff, router_x, heads, seed, vi, nuts, on_step):
        return VIFitter().draw_posterior(model, diff, router_x, heads, seed, vi, nuts, on_step)

    def recorded_schedules(self, original, info, draws, refine_target):
        return VIFitter().recorded_schedules(original, info, draws, refine_target)


class VIFitter(Fitter):
    """VI from the best MAP restart; the guide and the router posterior (``Guide``, ``RouterPosterior``) are
    variants chosen by ``VISchedule``."""

    inference = Inference.VI

    def draws_posterior(self, em):
        return True

    def draw_posterior(self, model, diff, router_x, heads, seed, vi, nuts, on_step):
        from bayesmicro.infer.vi import fit_vi

        return fit_vi(model, diff, router_x, heads, seed, vi, on_step)

    def recorded_schedules(self, original, info, draws, refine_target):
        from bayesmicro.infer.vi.refine import RefineSchedule
        from bayesmicro.infer.vi import VISchedule

        recorded, defaults = info.get("refine") or {}, RefineSchedule()
        refine = RefineSchedule(chains=recorded.get("chains", defaults.chains), draws=draws or original.n_draws,
                                warmup=recorded.get("warmup", defaults.warmup),
                                leapfrog=recorded.get("leapfrog", defaults.leapfrog), target=refine_target)
        return {"vi": VISchedule(guide=info.get("guide", "lowrank"), draws=draws or original.n_draws,
                                 laplace_draws=draws or original.n_draws,
                                 router_posterior=info.get("router_posterior", "laplace"),
                                 mc_draws=info.get("mc_draws", VISchedule.mc_draws), refine=refine)}


class NUTSFitter(Fitter):
    """NUTS over the heads and the router layers, from the best MAP restart (small problems)."""

    inference = Inference.NUTS

    def check_size(self, n_train):
        from bayesmicro.infer.nuts import NUTS_MAX_PAIRS

        if n_train > NUTS_MAX_PAIRS:
            raise BadInput(f"NUTS is for small problems (≤ {NUTS_MAX_PAIRS} training pairs, got {n_train}); "
                           "use --inference vi")

    def draws_posterior(self, em):
        return True

    def draw_posterior(self, model, diff, router_x, heads, seed, vi, nuts, on_step):
        from bayesmicro.infer.nuts import fit_nuts

        return fit_nuts(model, diff, router_x, heads, seed, nuts)

    def recorded_schedules(self, original, info, draws, refine_target):
        from bayesmicro.infer.nuts import NUTSSchedule

        defaults = NUTSSchedule()
        return {"nuts": NUTSSchedule(draws=info.get("draws", defaults.draws),
                                     warmup=info.get("warmup", defaults.warmup),
                                     chains=info.get("chains", defaults.chains),
                                     router_layers=tuple(info.get("router_layers", defaults.router_layers)),
                                     mass=info.get("mass", "adapt"))}  # runs from before "mass" adapted it


class StreamedFitter(Fitter):
    """MAP by minibatches streamed from a shard store (``infer.stream.fit_stream``): data larger than memory."""

    inference = Inference.MAP

    def fit(self, data, config, **options):
        from bayesmicro.infer.stream import fit_stream

        return fit_stream(data, k=config.k, router=config.router, alpha=config.alpha,
                          prior_scale=config.prior_scale, router_prior_scale=config.router_prior_scale,
                          hidden=config.hidden, seed=config.seed, **options)
