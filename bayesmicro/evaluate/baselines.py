"""Baselines the paper compares against, on the same features, splits and budgets as bayesmicro's models.

- single BT: ``bayesmicro.fit(data, k=1)``; static mixture (MaxMin-RLHF style, fixed weights):
  ``fit(data, k, router="none")``; MiCRo stage 1: ``fit(data, k, router="prompt")`` — see ``BASELINE_FITS``.
- shared-base ensemble (``fit_shared_base_ensemble``): K linear heads on the shared frozen features, head k's reward
  r_k = (w_k + p_k)ᵀh with p_k a frozen random "prior head" (randomised-prior ensemble), trained with the sum of the
  K BT losses (plus a shrinkage of w_k that keeps the heads apart); it predicts with uniform weights.
- HyRe test-time reweighting (``hyre_log_weights``): given B labelled pairs from the target (a context, group or
  user), head weights ∝ exp(−Σ_i L_ik) with L_ik = −log σ(Δ_ik) the BT loss of head k on labelled pair i, i.e. the
  posterior over "which head is this target" under a uniform prior. Works on any heads (ensemble or mixture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.methods import Optimizer
from bayesmicro.infer.map import Schedule, initial_heads
from bayesmicro.models.bt import bt_log_prob, mixture_prob, reward_margins

# name → (k or None for "the K of the comparison", router) for the baselines that are plain ``bayesmicro.fit`` calls.
BASELINE_FITS: dict[str, tuple[int | None, str]] = {
    "single_bt": (1, "none"),
    "static_mixture": (None, "none"),
    "micro_stage1": (None, "prompt"),
}


@dataclass
class Ensemble:
    """A fitted shared-base ensemble: effective heads (K, d) = trained + frozen prior heads."""

    heads: torch.Tensor

    def margins(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n, K) Δ_ik."""
        return reward_margins(self.heads, data.diff())

    def predict_proba(self, data: EmbeddedPairs, log_weights: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) Σ_k w_k σ(Δ_ik); uniform weights unless ``log_weights`` (K,) or (n, K) is given."""
        margins = self.margins(data)
        k = margins.shape[-1]
        if log_weights is None:
            log_weights = torch.full((k,), -math.log(k))
        return mixture_prob(log_weights.expand_as(margins), margins)


def fit_shared_base_ensemble(data: EmbeddedPairs, k: int, seed: int = 0, *, prior_margin_sd: float = 1.0,
                             shrinkage: float = 0.1, schedule: Schedule | None = None) -> Ensemble:
    """Fit the ensemble on ``data.part('train')``; effective head k = w_k + p_k.

    Loss per pair: Σ_k −log σ((w_k + p_k)ᵀx) + (shrinkage/2)·Σ_k (w_kᵀx)², x = h_w − h_l. The frozen prior heads p_k
    are drawn once from ``seed`` with margins of sd ``prior_margin_sd`` on the data. With linear heads on frozen
    features the BT loss is convex, so the heads differ only through the pull of the trained part w_k toward zero
    (on the margin scale, so it does not depend on the feature scale): ``shrinkage`` = 0 gives K copies of one BT.
    Full-batch L-BFGS for small problems, AdamW minibatches otherwise (``Schedule``).
    """
    train = data.part("train")
    diff = train.diff()
    n, d = diff.shape
    gen = torch.Generator().manual_seed(seed)
    prior = initial_heads(k, diff, gen) * (prior_margin_sd / 0.5)  # initial_heads gives margin sd ≈ 0.5
    trained = torch.zeros(k, d, requires_grad=True)
    schedule = schedule or Schedule()

    def loss_on(idx: torch.Tensor | None) -> torch.Tensor:
        x = diff if idx is None else diff[idx]
        trained_margins = reward_margins(trained, x)
        nll = -bt_log_prob(trained_margins + reward_margins(prior, x)).sum(-1).mean()
        return nll + 0.5 * shrinkage * trained_margins.pow(2).sum(-1).mean()

    if schedule.resolve(n * d * k) == Optimizer.LBFGS:
        opt = torch.optim.LBFGS([trained], lr=1.0, max_iter=schedule.max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = loss_on(None)
            loss.backward()
            return loss

        opt.step(closure)
    else:
        opt = torch.optim.AdamW([trained], lr=schedule.lr, weight_decay=0.0)
        for _ in range(schedule.adam_epochs(n, d)):
            for idx in torch.randperm(n, generator=gen).split(min(schedule.batch_size, n)):
                opt.zero_grad()
                loss_on(idx).backward()
                opt.step()
    return Ensemble((trained + prior).detach())


def hyre_log_weights(margins: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """HyRe: (K,) normalised log-weights ∝ −(1/T)·Σ_i L_ik from labelled pairs' margins (B, K) (chosen − rejected).

    With B = 0 pairs the weights are uniform."""
    total_log_lik = bt_log_prob(margins).sum(0) / temperature
    return torch.log_softmax(total_log_lik, dim=-1)
