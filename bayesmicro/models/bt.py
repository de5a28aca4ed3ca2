"""The Bradley–Terry math core every model reuses.

Shapes: n pairs, d response features, K heads, S posterior draws (optional leading batch dims are broadcast).
All reductions run in float32 (or the input's wider dtype) and use logsumexp / logsigmoid, so margins of ±1e4 stay
finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def reward_margins(heads: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """BT logits Δ_ik = w_kᵀ(h_i,w − h_i,l).

    heads: (..., K, d); diff: (n, d) chosen − rejected features. Returns (..., n, K).
    """
    return _wide(diff) @ _wide(heads).transpose(-1, -2)


def bt_log_prob(margins: torch.Tensor) -> torch.Tensor:
    """log σ(Δ): log-probability that the chosen response wins under one head. Same shape as ``margins``."""
    return F.logsigmoid(_wide(margins))


def mixture_log_prob(log_weights: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """log Σ_k π_ik σ(Δ_ik), computed as logsumexp_k(log π_ik + log σ(Δ_ik)).

    log_weights: (..., n, K) normalised log π; margins: (..., n, K). Returns (..., n).
    """
    # Low-precision log-weights may not normalise exactly; a log-probability is never above 0.
    return torch.logsumexp(_wide(log_weights) + bt_log_prob(margins), dim=-1).clamp_max(0.0)


def responsibilities(log_weights: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Posterior P(z_i = k | chosen ≻ rejected) ∝ π_ik σ(Δ_ik). Shapes as ``mixture_log_prob``; returns (..., n, K)."""
    return torch.softmax(_wide(log_weights) + bt_log_prob(margins), dim=-1)


def mixture_prob(log_weights: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Σ_k π_ik σ(Δ_ik) in [0, 1]. Returns (..., n)."""
    return mixture_log_prob(log_weights, margins).exp()


def entropy(log_weights: torch.Tensor) -> torch.Tensor:
    """H(π_i) = −Σ_k π_ik log π_ik. log_weights: (..., n, K); returns (..., n)."""
    # A head with weight exactly 0 (log π = −inf) contributes 0·log 0 = 0, not NaN: clamp −inf to the lowest float.
    log_weights = _wide(log_weights)
    log_weights = log_weights.clamp_min(torch.finfo(log_weights.dtype).min)
    return -(log_weights.exp() * log_weights).sum(-1)
