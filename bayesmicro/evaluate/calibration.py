"""Calibration of predicted P(chosen ≻ rejected): ECE (equal-mass bins), Brier, NLL, coverage of credible intervals.

Every observed pair is a "chosen wins" event, so calibration is measured on the symmetrised set: each pair
contributes (p, outcome 1) and (1 − p, outcome 0) — the same as orienting every pair at random, without the noise.
Coverage (synthetic populations only) is the share of pairs whose TRUE probability lies inside the central
credible interval of P(chosen ≻ rejected) computed from posterior draws.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bayesmicro._io import write_bytes_atomic
from bayesmicro.evaluate.metrics import brier, nll

DEFAULT_BINS = 10


def _symmetrised(prob_chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(prob_chosen).double().flatten()
    return torch.cat([p, 1 - p]), torch.cat([torch.ones_like(p), torch.zeros_like(p)])


def reliability_bins(prob_chosen: torch.Tensor, n_bins: int = DEFAULT_BINS) -> dict[str, np.ndarray]:
    """Equal-mass bins of the symmetrised predictions: per bin mean prediction, observed frequency and count."""
    p, y = _symmetrised(prob_chosen)
    order = torch.argsort(p)
    chunks = [c for c in torch.tensor_split(order, min(n_bins, len(order))) if len(c)]
    return {
        "predicted": np.array([float(p[c].mean()) for c in chunks]),
        "observed": np.array([float(y[c].mean()) for c in chunks]),
        "count": np.array([len(c) for c in chunks]),
    }


def ece(prob_chosen: torch.Tensor, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error with equal-mass bins: Σ_b (n_b / N) |mean p_b − freq_b|. prob_chosen: (n,)."""
    bins = reliability_bins(prob_chosen, n_bins)
    return float((bins["count"] * np.abs(bins["predicted"] - bins["observed"])).sum() / bins["count"].sum())


def credible_interval(prob_draws: torch.Tensor, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Central credible interval of each pair's probability from draws (S, n): (lower (n,), upper (n,))."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lower, upper = torch.quantile(prob_draws.double(), q, dim=0)
    return lower, upper


def coverage(lower: torch.Tensor, upper: torch.Tensor, true_prob: torch.Tensor) -> float:
    """Share of pairs with lower ≤ true probability ≤ upper. All (n,)."""
    t = torch.as_tensor(true_prob).double()
    return float(((lower.double() <= t) & (t <= upper.double())).double().mean())


def _block(prob_draws: torch.Tensor, true_prob: torch.Tensor | None, level: float, n_bins: int) -> dict:
    mean = prob_draws.mean(0)
    out = {"ece": ece(mean, n_bins), "brier": brier(mean), "nll": nll(mean), "n": int(mean.numel())}
    if true_prob is not None:
        lower, upper = credible_interval(prob_draws, level)
        out["coverage"] = coverage(lower, upper, true_prob)
        out["interval_width"] = float((upper - lower).mean())
        out["mean_abs_error_vs_truth"] = float((mean.double() - torch.as_tensor(true_prob).double()).abs().mean())
    return out


def calibration_report(prob_draws: torch.Tensor, group: np.ndarray | None = None,
                       true_prob: torch.Tensor | None = None, level: float = 0.9,
                       n_bins: int = DEFAULT_BINS) -> dict:
    """ECE, Brier, NLL (of the posterior-mean probability) and, with ``true_prob``, the coverage of the central
    ``level`` credible interval — overall and per group. prob_draws: (S, n) per-draw P(chosen ≻ rejected), or (n,)."""
    prob_draws = torch.as_tensor(prob_draws)
    if prob_draws.ndim == 1:
        prob_draws = prob_draws.unsqueeze(0)
    out = _block(prob_draws, true_prob, level, n_bins)
    out["level"] = level
    if group is not None:
        out["by_group"] = {}
        for g in sorted(set(group.tolist())):
            mask = torch.from_numpy(group == g)
            out["by_group"][str(g)] = _block(prob_draws[:, mask], None if true_prob is None else true_prob[mask],
                                             level, n_bins)
    return out


def reliability_plot(prob_chosen: torch.Tensor, path: str | os.PathLike, group: np.ndarray | None = None,
                     n_bins: int = DEFAULT_BINS, title: str = "reliability") -> Path:
    """Write a reliability diagram (PNG; overall, plus one line per group) to ``path`` atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prob_chosen = torch.as_tensor(prob_chosen)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    bins = reliability_bins(prob_chosen, n_bins)
    ax.plot(bins["predicted"], bins["observed"], "o-", color="black", lw=2,
            label=f"all (ECE {ece(prob_chosen, n_bins):.3f})")
    if group is not None:
        for g in sorted(set(group.tolist())):
            b = reliability_bins(prob_chosen[torch.from_numpy(group == g)], n_bins)
            ax.plot(b["predicted"], b["observed"], ".-", lw=1, alpha=0.7, label=str(g))
    ax.set_xlabel("predicted P(a ≻ b)")
    ax.set_ylabel("observed frequency")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)
