"""Capacity chosen on the training pairs: K (1 included), the head prior scale, the router prior scale and α.

The training pairs are cut into a fitting part and a validation part (``validation_rows``): an identical comparison
— the same two responses, in either order — never lies on both sides, or, with ``validate_by``, a whole label
(a topic, a user) is held out. Each setting is scored by the validation log-likelihood (elpd) of a MAP fit on the
fitting part, one coordinate at a time:

1. the head prior scale, at K = 1 (the single BT model);
2. K, at that prior scale, router prior sd 0.3 and α = 0 — the smallest K whose elpd is within max(4, dse) of the
   best (``evaluate.selection.smallest_adequate_k``), so K = 1 is kept unless heads earn their keep on held-out pairs;
3. for K > 1, the router prior scale, then α (the largest elpd).

No test pair is read. ``fit(k="auto")`` runs this, then fits the chosen setting on every training pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from bayesmicro.config import K_MAX
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.methods import ValidateBy

SMALL_ELPD_DIFF = 4.0  # the LOO FAQ's "small difference" in elpd (Vehtari et al.); evaluate.selection's K rule uses it too
VALIDATE_BY = ("pair", "group", "user")


@dataclass(frozen=True)
class CapacityGrid:
    """The settings ``choose_capacity`` compares; a fixed value (a one-element tuple) skips that coordinate."""

    ks: tuple[int, ...] = tuple(range(1, K_MAX + 1))  # as `bayesmicro fit --k auto` (--k-max 5)
    prior_scales: tuple[float, ...] = (0.3, 1.0, 3.0)
    router_prior_scales: tuple[float, ...] = (0.1, 0.3, 1.0)
    alphas: tuple[float, ...] = (0.0, 0.5)
    validation_fraction: float = 0.2
    validate_by: str = "pair"
    start: dict = field(default_factory=lambda: {"router_prior_scale": 0.3, "alpha": 0.0})

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise BadInput(f"ks must be integers ≥ 1, got {self.ks}")
        for name in ("prior_scales", "router_prior_scales"):
            values = getattr(self, name)
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise BadInput(f"{name} must be finite numbers > 0, got {values}")
        if not self.alphas or not all(math.isfinite(a) and a >= 0 for a in self.alphas):
            raise BadInput(f"alphas must be finite numbers ≥ 0, got {self.alphas}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise BadInput(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.validate_by not in VALIDATE_BY:
            raise BadInput(f"validate_by must be one of {VALIDATE_BY}, got {self.validate_by!r}")


def comparison_keys(diff: torch.Tensor) -> np.ndarray:
    """(n,) an integer per distinct comparison: pairs with the same two responses in either order (diff equal up
    to sign) share a key. diff: (n, d)."""
    probe = torch.randn(diff.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sign = torch.sign(diff.double() @ probe)
    canonical = diff * torch.where(sign == 0, torch.ones_like(sign), sign).to(diff.dtype).unsqueeze(1)
    return torch.unique(canonical, dim=0, return_inverse=True)[1].numpy()


def validation_rows(data: EmbeddedPairs, fraction: float, seed: int, validate_by: str = "pair") -> np.ndarray:
    """Row numbers (into ``data``) of a validation part of about ``fraction`` of the pairs, drawn by whole units:
    distinct comparisons (``pair``) or the pairs' ``group`` / ``user`` labels. At least one unit stays on each side."""
    if validate_by == ValidateBy.PAIR:
        keys = comparison_keys(data.diff())
    else:
        labels = getattr(data, validate_by)
        if labels is None:
            raise BadInput(f"validate_by={validate_by!r} needs a '{validate_by}' label for every pair",
                           source=data.source)
        keys = np.unique(labels, return_inverse=True)[1]
    units = np.unique(keys)
    if units.size < 2:
        raise BadInput(f"choosing capacity needs at least two distinct {validate_by} units among the training "
                       f"pairs, got {units.size}", source=data.source)
    rng = np.random.default_rng(seed)
    n_held = min(units.size - 1, max(1, int(round(fraction * units.size))))
    held = rng.choice(units, n_held, replace=False)
    return np.flatnonzero(np.isin(keys, held))


def choose_capacity(data: EmbeddedPairs, fit_on: Callable[..., object], router: str, seed: int = 0,
                    grid: CapacityGrid | None = None, fixed: dict | None = None) -> tuple[dict, dict]:
    """Choose K, ``prior_scale``, ``router_prior_scale`` and ``alpha`` on ``data``'s training pairs (see the
    module doc). ``fit_on(pairs, **settings)`` fits a MAP (``infer.api.fit`` with the caller's other options);
    ``fixed``: settings the caller set, kept out of the search. Returns (the chosen settings, a report: the rule,
    the validation table of every fit — elpd per pair, elpd_diff and dse to the best of its coordinate —, the
    validation pairs, and the single-BT rows)."""
    grid = grid or CapacityGrid()
    fixed = dict(fixed or {})
    train = data.part("train")
    held = validation_rows(train, grid.validation_fraction, seed, grid.validate_by)
    mask = np.zeros(len(train), dtype=bool)
    mask[held] = True
    fitting, validation = train.subset(np.flatnonzero(~mask)), train.subset(held)
    table: dict[str, dict] = {}

    def score(**settings) -> torch.Tensor:
        name = ", ".join(f"{key}={settings[key]}" for key in ("k", "prior_scale", "router_prior_scale", "alpha")
                         if key in settings)
        if name not in table:
            model = fit_on(fitting, router=router, **settings)
            pointwise = model.pointwise_log_lik(validation).double().logsumexp(0) - math.log(model.n_draws)
            table[name] = {"settings": settings, "pointwise": pointwise,
                           "elpd": float(pointwise.sum()), "nll": float(-pointwise.mean())}
        return table[name]["pointwise"]

    chosen = {"prior_scale": fixed.get("prior_scale"), "router_prior_scale": fixed.get("router_prior_scale"),
              "alpha": fixed.get("alpha")}
    ks = (fixed["k"],) if "k" in fixed else grid.ks
    if chosen["prior_scale"] is None:
        chosen["prior_scale"] = _best(lambda s: score(k=1, prior_scale=s), grid.prior_scales)
    start = {key: chosen[key] if chosen[key] is not None else grid.start[key]
             for key in ("router_prior_scale", "alpha")}
    k_scores = {k: score(k=k, prior_scale=chosen["prior_scale"], **({} if k == 1 else start)) for k in ks}
    chosen["k"] = _smallest_adequate(k_scores)
    for key, values in (("router_prior_scale", grid.router_prior_scales), ("alpha", grid.alphas)):
        if chosen[key] is None:
            others = {name: chosen[name] if chosen[name] is not None else start[name]
                      for name in ("router_prior_scale", "alpha") if name != key}
            chosen[key] = (start[key] if chosen["k"] == 1 else
                           _best(lambda v: score(k=chosen["k"], prior_scale=chosen["prior_scale"],
                                                 **{key: v}, **others), values))
    report = {"rule": "validation elpd, one setting at a time: prior scale at K = 1; the smallest K within "
                      "max(4, dse) of the best; then router prior scale and alpha",
              "validate_by": grid.validate_by, "validation_pairs": int(len(validation)),
              "fitting_pairs": int(len(fitting)),
              "table": {name: {"settings": row["settings"], "elpd": row["elpd"], "nll": row["nll"]}
                        for name, row in table.items()},
              "chosen": dict(chosen)}
    single = {name: row["nll"] for name, row in table.items() if row["settings"].get("k") == 1}
    if single and chosen["k"] > 1:
        best_single = min(single.values())
        mixture_nll = min(row["nll"] for row in table.values() if row["settings"].get("k") == chosen["k"])
        report["single_bt_validation_nll"], report["mixture_validation_nll"] = best_single, mixture_nll
    return chosen, report


def _best(scores_of: Callable[[float], torch.Tensor], values: tuple[float, ...]) -> float:
    """The value whose validation elpd is largest."""
    return max(values, key=lambda v: float(scores_of(v).sum()))


def _smallest_adequate(k_scores: dict[int, torch.Tensor]) -> int:
    """The smallest K whose elpd is within max(4, dse) of the best K's (dse = √n · sd of the pointwise
    differences)."""
    best = max(k_scores, key=lambda k: float(k_scores[k].sum()))
    n = k_scores[best].numel()
    for k in sorted(k_scores):
        diff = k_scores[best] - k_scores[k]
        dse = float(diff.std() * math.sqrt(n)) if k != best else 0.0
        if float(diff.sum()) <= max(SMALL_ELPD_DIFF, dse):
            return k
    return best
