"""Stage 2 as one interface: ``Router.adapt(fit, labelled)`` turns a stage-1 fit and a unit's labelled pairs into a
posterior (or point estimate) over the mixture weights, whose ``predict_proba(pairs)`` predicts new pairs;
``Router.predict(fit, labelled, test)`` does both. Implemented by Hedge (paper Algorithm 1), the exact weight
posterior, the amortized router, HyRe and the hierarchical offsets; ``routing.registry`` maps each
``methods.RouteMethod`` member to its class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import RouteMethod
from bayesmicro.models.bt import mixture_log_prob
from bayesmicro.routing.amortized import amortized_route
from bayesmicro.routing.choose import choose_restart
from bayesmicro.routing.common import check_routable, rows_of
from bayesmicro.routing.hedge import hedge_route
from bayesmicro.routing.hierarchical import UnitScales, adapt, fit_jointly
from bayesmicro.routing.posterior import hyre_weights, predict_with_posterior, weight_posterior


class Adapted(Protocol):
    """What ``Router.adapt`` returns: the personalised mixture, which predicts pairs."""

    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor: ...


class Router(ABC):
    """One stage-2 method. ``by``: the unit label (``group`` or ``user``); ``restart="context"``: adapt the restart of
    ``fit.restart_modes`` whose router best separates the labelled pairs' units (``routing.choose``)."""

    method: ClassVar[RouteMethod]
    reweights_heads: ClassVar[bool] = True  # re-weights the stage-1 heads: needs K ≥ 2
    reads_context: ClassVar[bool] = False  # learns one router on [prompt; context]: the pairs need a context
    uses_offsets: ClassVar[bool] = False  # per-unit offsets: needs the units' prior sds (``scales``)

    def __init__(self, *, tau: float = 1e-3, seed: int = 0, by: str = "group", concentration: float = 1.0,
                 mode: str = "static", restart: str = "kept", scales: UnitScales | None = None,
                 population: EmbeddedPairs | None = None):
        self.tau, self.seed, self.by, self.concentration = tau, seed, by, concentration
        self.mode, self.restart, self.scales, self.population = mode, restart, scales, population

    def adapt(self, fit: Fit, labelled: EmbeddedPairs) -> Adapted:
        """The weight posterior given the ``labelled`` pairs (stage-1 heads fixed)."""
        check_routable(fit)
        fit, _ = choose_restart(fit, labelled, self.by, self.restart)
        return self._adapt(fit, labelled)

    @abstractmethod
    def _adapt(self, fit: Fit, labelled: EmbeddedPairs) -> Adapted: ...

    def predict(self, fit: Fit, labelled: EmbeddedPairs, test: EmbeddedPairs) -> torch.Tensor:
        """(n_test,) P(chosen ≻ rejected) for ``test`` after adapting to ``labelled``."""
        return self.adapt(fit, labelled).predict_proba(test)


class HedgeRouting(Router):
    """Paper Algorithm 1: one context-aware router on [prompt; context] from all labelled pairs (``routing.hedge``)."""

    method = RouteMethod.HEDGE
    reads_context = True

    def _adapt(self, fit, labelled):
        return hedge_route(fit, labelled, tau=self.tau, seed=self.seed)


class AmortizedRouting(Router):
    """q(π | x, c) trained by the ELBO on the labelled pairs (``routing.amortized``)."""

    method = RouteMethod.AMORTIZED
    reads_context = True

    def _adapt(self, fit, labelled):
        return amortized_route(fit, labelled, seed=self.seed)


class HierarchicalRouting(Router):
    """Each unit's offsets on the heads and the router logits, MAP under the empirical-Bayes prior sds ``scales``
    (``routing.hierarchical``); a unit without labelled pairs is predicted by stage 1 exactly."""

    method = RouteMethod.HIERARCHICAL
    reweights_heads = False
    uses_offsets = True

    def adapt(self, fit, labelled):
        return adapt(fit, labelled, self._scales(), self.by)

    def _adapt(self, fit, labelled):  # pragma: no cover - adapt is overridden
        return self.adapt(fit, labelled)

    def _scales(self) -> UnitScales:
        if self.scales is None:
            raise BadInput(f"method {self.method.value!r} needs the units' prior sds: scales=estimate_scales(fit, "
                           "training pairs, by)", argument="scales")
        return self.scales


class JointRouting(HierarchicalRouting):
    """Seen units: the population refitted together with the units' offsets (``routing.hierarchical.fit_jointly``)
    on the pairs stage 1 was fitted on (``population``), the labelled ones — each one of those pairs — carrying
    their unit's offsets; a unit without labelled pairs is predicted by the refitted population."""

    method = RouteMethod.JOINT

    def adapt(self, fit, labelled):
        if self.population is None:
            raise BadInput("method 'joint' refits the population: population=the pairs stage 1 was fitted on",
                           argument="population")
        personal = rows_of(self.population, labelled, self.by)
        return fit_jointly(fit, self.population, self._scales(), self.by, personal=personal)


@dataclass
class PerUnit:
    """One weight vector (or posterior) per ``by`` unit, inferred from that unit's labelled pairs (a unit with none
    keeps the prior); ``predict_proba`` routes each test pair by its unit."""

    router: "UnitRouter"
    fit: Fit
    labelled: EmbeddedPairs

    def predict_proba(self, test: EmbeddedPairs) -> torch.Tensor:
        by = self.router.by
        test_labels, labelled_labels = getattr(test, by), getattr(self.labelled, by)
        if test_labels is None or labelled_labels is None:
            raise BadInput(f"method {self.router.method.value!r} routes per {by}: every pair needs a '{by}' label",
                           source=test.source)
        prob = torch.zeros(len(test), dtype=torch.float64)
        for label in sorted(set(test_labels.tolist())):
            rows = np.flatnonzero(test_labels == label)
            mine = np.flatnonzero(labelled_labels == label)
            own = self.labelled.subset(mine) if mine.size else None
            prob[torch.from_numpy(rows)] = self.router.unit_proba(self.fit, own, test.subset(rows))
        return prob.float()


class UnitRouter(Router):
    """A router that infers one weight vector per unit from its own labelled pairs."""

    def _adapt(self, fit, labelled):
        return PerUnit(self, fit, labelled)

    @abstractmethod
    def unit_proba(self, fit: Fit, own: EmbeddedPairs | None, part: EmbeddedPairs) -> torch.Tensor:
        """(n_part,) float64 predictions for one unit's test pairs ``part`` given its labelled pairs ``own``."""


class PosteriorRouting(UnitRouter):
    """The exact posterior over each unit's mixture weights (``routing.posterior``)."""

    method = RouteMethod.POSTERIOR

    def unit_proba(self, fit, own, part):
        post = weight_posterior(fit, own, reference=part, concentration=self.concentration, mode=self.mode,
                                seed=self.seed)
        return predict_with_posterior(fit, post, part)["mean"]


class HyReRouting(UnitRouter):
    """HyRe: weights ∝ prior · exp(−labelled loss), the κ → 0 limit of the static posterior."""

    method = RouteMethod.HYRE

    def unit_proba(self, fit, own, part):
        prior = fit.log_weights(part if own is None else own).double().exp().mean(0)
        weights = prior if own is None else hyre_weights(fit, own, prior)
        margins = fit.margins(part).double()
        log_w = weights.log().expand(margins.shape[1], -1)
        return mixture_log_prob(log_w, margins).exp().mean(0)


__all__ = ["Adapted", "AmortizedRouting", "HedgeRouting", "HierarchicalRouting", "HyReRouting", "PerUnit",
           "PosteriorRouting", "Router", "UnitRouter"]
