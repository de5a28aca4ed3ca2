"""Stage 2 chooses the stage-1 restart: the one whose router tells the labelled pairs' contexts apart.

Stage 1's MAP is multimodal and its restarts end in different modes; which one stage 2 can route well is not what
the training likelihood ranks (hh, ``bayesmicro bench hh_optima``). Stage 2 holds what stage 1 lacks: each
labelled pair's context (group or user). A mode whose heads specialise along the contexts has a router that
already separates them, so the rule keeps the restart with the largest plug-in mutual information between a
labelled pair's context c and the head z its router picks,

    p(c, k) = (1/n) Σ_{i: c_i = c} π_k(x_i),    I(C; Z) = Σ_{c,k} p(c, k) log p(c, k) / (p(c) p(k)),

which reads the routers only (not the preference labels, so it does not reward a mode for fitting them).
With many small contexts the plug-in estimate is biased upward by about (K − 1)(G − 1) / 2n — the same for every
restart of one run, so the ranking is unaffected.
"""

from __future__ import annotations

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.methods import RestartRule
from bayesmicro.methods import Router as RouterKind
from bayesmicro.infer.results.mixture import Fit

RESTART_RULES = tuple(member.value for member in RestartRule)


def context_information(fit: Fit, labelled: EmbeddedPairs, by: str = "group") -> float:
    """I(C; Z) in nats between the ``by`` label of the ``labelled`` pairs and the head under ``fit``'s router
    weights π(x) (n, K) (its point router: ``router_state``)."""
    labels = getattr(labelled, by)
    if labels is None:
        raise BadInput(f"choosing a restart by context needs a '{by}' label for every labelled pair",
                       source=labelled.source)
    weights = fit.log_weights(labelled).double().exp()  # (n, K)
    levels, codes = np.unique(labels, return_inverse=True)
    joint = torch.zeros(len(levels), weights.shape[1], dtype=torch.float64)
    joint.index_add_(0, torch.from_numpy(codes.reshape(-1)), weights)
    joint /= len(labelled)
    independent = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    terms = joint * (joint / independent).log()
    return float(torch.where(joint > 0, terms, torch.zeros_like(terms)).sum())


def choose_restart(fit: Fit, labelled: EmbeddedPairs, by: str = "group", rule: str = "context") -> tuple[Fit, dict]:
    """(the Fit stage 2 routes, a record). ``rule="kept"``: ``fit`` itself; ``"context"``: the restart in
    ``fit.restart_modes`` with the largest ``context_information`` on ``labelled`` (first on ties)."""
    if rule not in RESTART_RULES:
        raise BadInput(f"restart rule must be one of {RESTART_RULES}, got {rule!r}")
    if rule == RestartRule.KEPT:
        return fit, {"rule": "kept"}
    if not fit.restart_modes:
        raise BadInput("choosing a restart by context needs the run's restarts: fit with keep_restarts=True "
                       "(`bayesmicro fit … --keep-restarts`)")
    if fit.config.k < 2 or fit.config.router == RouterKind.NONE:
        raise BadInput("choosing a restart by context needs a routed mixture (k ≥ 2 and a router that reads its "
                       f"input); got k={fit.config.k}, router={fit.config.router!r}")
    scores = [context_information(mode, labelled, by) for mode in fit.restart_modes]
    chosen = max(range(len(scores)), key=lambda r: (scores[r], -r))
    return fit.restart_modes[chosen], {"rule": "context", "chosen": chosen, "context_information": scores}
