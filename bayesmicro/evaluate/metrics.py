"""Label-invariant metrics of predicted P(chosen ≻ rejected), overall and per group.

Decision rule for accuracy: a pair counts as correct when Σ_k π_k σ(Δ_k) > ½, i.e. the model's probability that the
chosen response wins exceeds one half (ties at exactly ½ count as wrong).
"""

from __future__ import annotations

import numpy as np
import torch

from bayesmicro.errors import BadInput

_EPS = 1e-12


def accuracy(prob_chosen: torch.Tensor) -> float:
    """Fraction of pairs with P(chosen ≻ rejected) > ½. prob_chosen: (n,)."""
    return float((prob_chosen > 0.5).double().mean())


def nll(prob_chosen: torch.Tensor) -> float:
    """Mean −log P(chosen ≻ rejected) in nats. prob_chosen: (n,)."""
    return float(-prob_chosen.double().clamp_min(_EPS).log().mean())


def brier(prob_chosen: torch.Tensor) -> float:
    """Mean (1 − P(chosen ≻ rejected))², the Brier score of the observed outcome."""
    return float((1.0 - prob_chosen.double()).pow(2).mean())


METRICS = {"accuracy": accuracy, "nll": nll, "brier": brier}


def score(prob_chosen: torch.Tensor, group: np.ndarray | None = None) -> dict:
    """All metrics overall, plus ``by_group`` when group labels are given.

    ``by_group`` lists exactly the groups that have at least one scored pair: a group with no pairs in the scored
    data (e.g. absent from the test split) is left out rather than reported with undefined (NaN) metrics.
    """
    prob_chosen = torch.as_tensor(prob_chosen)
    if prob_chosen.ndim != 1 or prob_chosen.numel() == 0:
        raise BadInput(f"expected a non-empty vector of probabilities, got shape {tuple(prob_chosen.shape)}")
    if not bool(((prob_chosen >= 0) & (prob_chosen <= 1)).all()):  # also catches NaN
        raise BadInput("probabilities must lie in [0, 1] (got NaN or values outside)")
    if group is not None and np.shape(group) != (prob_chosen.numel(),):
        raise BadInput(f"group labels have shape {np.shape(group)}, expected ({prob_chosen.numel()},)")
    out = {name: fn(prob_chosen) for name, fn in METRICS.items()}
    out["n"] = int(prob_chosen.numel())
    if group is not None:
        out["by_group"] = {
            str(g): {**{name: fn(prob_chosen[torch.from_numpy(group == g)]) for name, fn in METRICS.items()},
                     "n": int((group == g).sum())}
            for g in sorted(set(group.tolist()))
        }
    return out
