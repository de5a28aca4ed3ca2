"""The result family: every fitted model — the embedded mixture (``Fit``) and the per-user latent-class model
(``LatentClassResult``) — answers the same questions with the same methods: ``predict`` (P(first ≻ second) of new
pairs), ``reward`` (per-head rewards, or the mixture's given what the router reads), ``draws`` (the posterior draws,
by parameter), ``save`` and ``load`` (a run folder; ``infer.results.load.load`` reads either kind)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch


class Posterior(ABC):
    """A fitted model: a posterior (S draws; S = 1 for a point estimate) over its parameters."""

    @abstractmethod
    def predict_proba(self, data: Any) -> torch.Tensor:
        """(n,) P(first ≻ second) of every pair of ``data`` (posterior mean)."""

    def predict(self, data: Any) -> torch.Tensor:
        """(n,) P(first ≻ second) of every pair of ``data`` (posterior mean): ``predict_proba``."""
        return self.predict_proba(data)

    @abstractmethod
    def reward(self, features: torch.Tensor, router_input: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head rewards (n, K), posterior mean; with what the router reads, the mixture reward (n,)."""

    @abstractmethod
    def draws(self) -> dict[str, torch.Tensor]:
        """The posterior draws by parameter name, each (S, ...)."""

    @property
    def n_draws(self) -> int:
        return int(self.draws()["heads"].shape[0])

    @abstractmethod
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the run folder ``path`` atomically."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike) -> "Posterior":
        """Rebuild the result from its run folder."""


__all__ = ["Posterior"]
