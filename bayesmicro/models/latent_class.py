"""Per-user latent class mixture of BT models: all pairs of one user share one component z_u.

    P(pairs of u) = Σ_k π_k(c_u) Π_{i ∈ u} σ(w_kᵀ(h_iw − h_il)),   π(c_u) = softmax(router(c_u))

The router reads the user's covariates c_u (a multinomial logit when ``hidden = 0``, the model of R's
``flexmix``/``psychomix::btmix`` concomitant variables). The per-user likelihood and the exact responsibilities
P(z_u = k | the user's pairs) come from the BT math core (``models.bt``) summed per user, then a logsumexp over k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from bayesmicro.errors import BadInput
from bayesmicro.models.bt import bt_log_prob, reward_margins
from bayesmicro.models.mixture import Router


@dataclass
class UserPairs:
    """Pairs grouped by user. ``diff`` (n, d); ``user_index`` (n,) in [0, U); ``covariates`` (U, p) per user;
    ``users`` (U,) the user labels; pairs are sorted by user, ``offsets`` (U + 1,) delimit each user's rows."""

    diff: torch.Tensor
    user_index: torch.Tensor
    covariates: torch.Tensor
    users: np.ndarray
    offsets: torch.Tensor

    @property
    def n_users(self) -> int:
        return len(self.users)

    @classmethod
    def from_pairs(cls, data, source: str | None = None) -> "UserPairs":
        """Group ``EmbeddedPairs`` by ``user``; the router covariates are the ``prompt`` rows, which must be
        constant within a user."""
        source = source or data.source
        if data.user is None:
            raise BadInput("a per-user latent class model needs a 'user' label for every pair", source=source)
        users, index = np.unique(data.user, return_inverse=True)
        order = np.argsort(index, kind="stable")
        index_sorted = torch.from_numpy(index[order]).long()
        diff = data.diff()[torch.from_numpy(order)]
        prompt = data.prompt.float()[torch.from_numpy(order)]
        counts = torch.bincount(index_sorted, minlength=len(users))
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        covariates = prompt[offsets[:-1]]
        varying = (prompt != covariates[index_sorted]).any(1)
        if bool(varying.any()):
            row = int(order[int(varying.nonzero()[0])])
            raise BadInput(f"row {row}: covariates of user {str(data.user[row])!r} differ from that user's earlier rows "
                           "(a per-user router needs one covariate vector per user)", source=source)
        return cls(diff, index_sorted, covariates, users, offsets)

    def select_users(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pairs of ``users`` (B,): (diff (m, d), local user index (m,) in [0, B), covariates (B, p))."""
        starts, ends = self.offsets[users], self.offsets[users + 1]
        rows = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())])
        local = torch.repeat_interleave(torch.arange(len(users)), ends - starts)
        return self.diff[rows], local, self.covariates[users]


def component_log_lik(heads: torch.Tensor, diff: torch.Tensor, user_index: torch.Tensor,
                      n_users: int) -> torch.Tensor:
    """Σ_{i ∈ u} log σ(Δ_ik): each user's pairs under each head. heads (..., K, d), diff (n, d),
    user_index (n,) → (..., U, K)."""
    pair_ll = bt_log_prob(reward_margins(heads, diff))  # (..., n, K)
    out = pair_ll.new_zeros(*pair_ll.shape[:-2], n_users, pair_ll.shape[-1])
    return out.index_add(-2, user_index, pair_ll)


def user_log_lik(log_weights: torch.Tensor, comp_ll: torch.Tensor) -> torch.Tensor:
    """log Σ_k π_uk Π_i σ(Δ_ik): (..., U, K) × (..., U, K) → (..., U)."""
    return torch.logsumexp(log_weights + comp_ll, dim=-1)


def user_responsibilities(log_weights: torch.Tensor, comp_ll: torch.Tensor) -> torch.Tensor:
    """Exact P(z_u = k | the user's pairs): (..., U, K)."""
    return torch.softmax(log_weights + comp_ll, dim=-1)


class LinearRouter(nn.Module):
    """Multinomial logit π(c) = softmax(B c + b) on standardised covariates (static logits when p = 0)."""

    def __init__(self, k: int, input_dim: int):
        super().__init__()
        self.k, self.input_dim = k, input_dim
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_scale", torch.ones(input_dim))
        self.linear = nn.Linear(input_dim, k)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def standardize_from(self, x: torch.Tensor) -> None:
        if self.input_dim:
            self.input_mean.copy_(x.mean(0))
            self.input_scale.copy_(x.std(0).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones(self.input_dim))

    def log_weights(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(n, K) log π."""
        if self.k == 1:
            return torch.zeros(n, 1)
        z = (x - self.input_mean) / self.input_scale
        return torch.log_softmax(self.linear(z), -1)


def make_router(k: int, input_dim: int, hidden: int) -> nn.Module:
    """A linear router (``hidden = 0``, flexmix's concomitant model) or the one-hidden-layer ``Router``."""
    if hidden <= 0 or k == 1 or input_dim == 0:
        return LinearRouter(k, input_dim)
    return Router("prompt", k, input_dim, hidden)


class UserLatentClassBT(PyroModule):
    """Pyro model of the per-user latent class mixture; heads ~ Normal(0, prior_scale), the component summed out
    per user inside a ``users`` plate (minibatches over users)."""

    def __init__(self, dim: int, k: int, covariate_dim: int = 0, *, hidden: int = 0, prior_scale: float = 10.0):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.dim, self.k, self.prior_scale = dim, k, prior_scale
        self.router = make_router(k, covariate_dim, hidden)
        self.heads = PyroSample(lambda self: dist.Normal(0.0, self.prior_scale).expand([self.k, self.dim]).to_event(2))

    def forward(self, diff: torch.Tensor, user_index: torch.Tensor, covariates: torch.Tensor,
                size: int | None = None) -> torch.Tensor:
        """diff (m, d) pairs of B users; user_index (m,) in [0, B); covariates (B, p); size: U users in all."""
        heads = self.heads  # global site, read before the data plate
        n_users = covariates.shape[0]
        with pyro.plate("users", size or n_users, subsample=torch.arange(n_users)):
            log_w = self.router.log_weights(covariates, n_users)
            log_lik = user_log_lik(log_w, component_log_lik(heads, diff, user_index, n_users))
            pyro.factor("obs", log_lik)
        return log_lik
