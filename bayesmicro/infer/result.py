"""``Fit``: the typed result of every inference method — draws of the heads, the router, a summary, save/load."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bayesmicro._io import atomic_dir, read_json, read_tensors, write_json, write_tensors
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.models.bt import mixture_log_prob, reward_margins
from bayesmicro.models.mixture import ROUTERS, BTMixture

RUN_FORMAT = "bayesmicro.run/1"
CONFIG_FILE, PARAMS_FILE, SUMMARY_FILE = "config.json", "params.safetensors", "summary.json"


@dataclass(frozen=True)
class FitConfig:
    """Everything needed to rebuild the model of a run."""

    k: int
    router: str
    dim: int
    router_dim: int = 0
    hidden: int = 128
    prior_scale: float = 1.0
    alpha: float = 0.5
    inference: str = "map"
    seed: int = 0

    @property
    def uses_context(self) -> bool:
        return self.router == "context"

    def build_model(self) -> BTMixture:
        return BTMixture(self.dim, self.k, self.router, self.router_dim, hidden=self.hidden,
                         prior_scale=self.prior_scale, alpha=self.alpha)


@dataclass
class Fit:
    """A fitted mixture. ``heads`` holds S draws (S = 1 for a point estimate) of shape (S, K, d)."""

    config: FitConfig
    heads: torch.Tensor
    router_state: dict[str, torch.Tensor]
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._router = self.config.build_model().router
        self._router.load_state_dict(self.router_state)
        self._router.eval()

    # -- predictions --------------------------------------------------------------------------------------------
    @property
    def n_draws(self) -> int:
        return self.heads.shape[0]

    def check_compatible(self, data: EmbeddedPairs) -> None:
        if data.dim != self.config.dim:
            raise BadInput(f"response features have {data.dim} columns, the run expects {self.config.dim}",
                           source=data.source)
        if self._router.reads_input:
            got = data.prompt_dim + (data.context_dim if self.config.uses_context else 0)
            if self.config.uses_context and data.context is None:
                raise BadInput("the run routes on context, and these pairs have no 'context' matrix",
                               source=data.source)
            if got != self.config.router_dim:
                raise BadInput(f"router input has {got} columns, the run expects {self.config.router_dim}",
                               source=data.source)

    @torch.no_grad()
    def log_weights(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n, K) log π(x) from the router."""
        self.check_compatible(data)
        x = data.router_input(self.config.uses_context) if self._router.reads_input else None
        return self._router.log_weights(x, len(data))

    @torch.no_grad()
    def margins(self, data: EmbeddedPairs) -> torch.Tensor:
        """(S, n, K) head margins Δ for every draw."""
        self.check_compatible(data)
        return reward_margins(self.heads, data.diff())

    @torch.no_grad()
    def pointwise_log_lik(self, data: EmbeddedPairs) -> torch.Tensor:
        """(S, n) log P(chosen ≻ rejected) for every draw."""
        return mixture_log_prob(self.log_weights(data), self.margins(data))

    @torch.no_grad()
    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) posterior-mean P(chosen ≻ rejected) = mean over draws of Σ_k π_k σ(Δ_k)."""
        return self.pointwise_log_lik(data).exp().mean(0)

    @torch.no_grad()
    def reward(self, features: torch.Tensor, router_input: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head rewards r_k = w_kᵀh, posterior mean: (n, K); with ``router_input`` the mixture reward
        Σ_k π_k r_k: (n,)."""
        rewards = (features.float() @ self.heads.transpose(-1, -2)).mean(0)
        if router_input is None:
            return rewards
        return (self._router.log_weights(router_input.float(), rewards.shape[0]).exp() * rewards).sum(-1)

    # -- disk ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        tensors = {"heads": self.heads, **{f"router.{k}": v for k, v in self.router_state.items()}}
        with atomic_dir(path) as tmp:
            write_tensors(tmp / PARAMS_FILE, tensors)
            write_json(tmp / CONFIG_FILE, {"format": RUN_FORMAT, **asdict(self.config)})
            write_json(tmp / SUMMARY_FILE, self.summary)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fit":
        path = Path(path)
        if not path.is_dir():
            raise BadInput("not a run folder (expected the --out folder of `bayesmicro fit`)", source=str(path))
        raw = read_json(path / CONFIG_FILE)
        if not isinstance(raw, dict) or raw.pop("format", None) != RUN_FORMAT:
            raise BadInput(f"'{CONFIG_FILE}' is not a bayesmicro run config ({RUN_FORMAT})", source=str(path))
        try:
            config = FitConfig(**raw)
        except TypeError as exc:
            raise BadInput(f"'{CONFIG_FILE}' has unexpected fields ({exc})", source=str(path)) from None
        _check_config_values(config, path)
        tensors = read_tensors(path / PARAMS_FILE)
        for name, value in tensors.items():
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise BadInput(f"'{PARAMS_FILE}' tensor '{name}' is not finite floating point "
                               f"(dtype {value.dtype})", source=str(path))
        heads = tensors.pop("heads", None)
        if heads is None or heads.ndim != 3 or heads.shape[1:] != (config.k, config.dim):
            raise BadInput(f"'{PARAMS_FILE}' heads do not have shape (S, {config.k}, {config.dim})", source=str(path))
        router_state = {k.removeprefix("router."): v for k, v in tensors.items() if k.startswith("router.")}
        summary = read_json(path / SUMMARY_FILE)  # every saved run has one; its absence means a damaged folder
        try:
            return cls(config, heads, router_state, summary)
        except RuntimeError as exc:  # state dict does not match the config
            raise BadInput(f"'{PARAMS_FILE}' does not match '{CONFIG_FILE}' ({str(exc).splitlines()[0]})",
                           source=str(path)) from None


def _check_config_values(config: FitConfig, path: Path) -> None:
    """Types and ranges of a run config read from disk (a hand-edited file must fail here, not deep in torch)."""
    def bad(field: str, expected: str) -> BadInput:
        return BadInput(f"'{CONFIG_FILE}' field '{field}' is {getattr(config, field)!r}, expected {expected}",
                        source=str(path))

    for field, least in (("k", 1), ("dim", 1), ("hidden", 1), ("seed", 0), ("router_dim", 0)):
        value = getattr(config, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise bad(field, "a positive integer" if least else "an integer ≥ 0")
    for field in ("prior_scale", "alpha"):
        value = getattr(config, field)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise bad(field, "a finite number ≥ 0")
    if config.router not in ROUTERS:
        raise bad("router", f"one of {ROUTERS}")
    if not isinstance(config.inference, str):
        raise bad("inference", "a method name")
