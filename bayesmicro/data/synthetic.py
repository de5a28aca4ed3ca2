"""Synthetic preference populations with known truth: K heads, a true router, optional users in latent groups.

Generative story for pair i (all features standard normal unless stated):

- user u(i) belongs to latent group g(u); the user's context c_u = onehot-ish embedding of g(u) + noise
- prompt features e_i; response features h_ia, h_ib
- π_i = softmax(sharpness · (A e_i + B c_u))      (the true router)
- P(a ≻ b) = Σ_k π_ik σ(w_kᵀ(h_ia − h_ib))          (heads w_k = shared + spread · own_k)
- a label is drawn from that probability; the preferred response becomes ``chosen``
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs


@dataclass(frozen=True)
class PopulationSpec:
    """Settings of a synthetic population. The defaults are the built-in data set of ``bayesmicro fit``.

    The defaults make the single-BT gap real: three heads whose own directions dominate the shared one
    (``head_spread`` 1.0 vs ``shared_scale`` 0.3) and a sharp router (``router_sharpness`` 8) driven mostly by the
    user's context (``prompt_weight`` 0.3, ``context_noise`` 0.2), so most pairs are decided by one head that
    disagrees with the others.
    """

    n_pairs: int = 6000
    dim: int = 16
    prompt_dim: int = 8
    context_dim: int = 8
    k: int = 3
    n_users: int = 300
    head_scale: float = 3.0
    head_spread: float = 1.0
    shared_scale: float = 0.3
    router_sharpness: float = 8.0
    prompt_weight: float = 0.3
    context_noise: float = 0.2
    test_fraction: float = 0.25
    group_weights: tuple[float, ...] | None = None  # share of users in each group (default: equal)
    reversed_heads: bool = False  # heads and group contexts in sign-reversed pairs: subgroups reverse each other

    def __post_init__(self) -> None:
        for name in ("n_pairs", "dim", "prompt_dim", "context_dim", "k", "n_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.group_weights is not None and (len(self.group_weights) != self.k or min(self.group_weights) < 0):
            raise ValueError(f"group_weights needs {self.k} non-negative numbers, got {self.group_weights}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class Truth:
    """The parameters that generated a population, and per-pair quantities aligned with its rows."""

    heads: torch.Tensor  # (K, d)
    router_prompt: torch.Tensor  # (K, d_p)
    router_context: torch.Tensor  # (K, d_c)
    sharpness: float
    weights: torch.Tensor  # (n, K) true π_i
    prob_chosen: torch.Tensor  # (n,) true P(chosen ≻ rejected)
    component: torch.Tensor  # (n,) the head that produced the label
    user_group: np.ndarray  # (n_users,) latent group of each user

    def log_weights(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n, K) true log π for any pairs with this population's feature layout."""
        logits = data.prompt.float() @ self.router_prompt.T
        if data.context is not None:
            logits = logits + data.context.float() @ self.router_context.T
        return torch.log_softmax(self.sharpness * logits, dim=-1)

    def prob(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) true P(chosen ≻ rejected) for any pairs with this population's layout."""
        # Computed directly (not through models.bt) so that it stays an independent check of the math core.
        margins = data.diff() @ self.heads.T
        return (self.log_weights(data).exp() * torch.sigmoid(margins)).sum(-1)


def _group_codes(k: int, context_dim: int, normal) -> torch.Tensor:
    """(K, d_c) group context codes: orthogonal when K ≤ d_c (so each group's context picks out its own head),
    scaled like standard-normal vectors."""
    codes = normal(max(k, context_dim), context_dim)
    if k <= context_dim:
        codes = torch.linalg.qr(codes.T)[0].T * np.sqrt(context_dim)
    return codes[:k]


def make_population(spec: PopulationSpec = PopulationSpec(), seed: int = 0) -> tuple[EmbeddedPairs, Truth]:
    """Draw a population; returns embedded pairs (with a train/test split) and the truth behind them."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    n, d, k = spec.n_pairs, spec.dim, spec.k
    unit = 1.0 / np.sqrt(d)
    heads = spec.head_scale * unit * (spec.shared_scale * normal(1, d) + spec.head_spread * normal(k, d))
    if spec.reversed_heads:
        heads[1::2] = -heads[0::2][: k // 2]

    group_codes = _group_codes(k, spec.context_dim, normal)
    if spec.reversed_heads:  # opposite contexts route to opposite heads: balanced, reversed subgroups
        group_codes[1::2] = -group_codes[0::2][: k // 2]
    if spec.group_weights is None:
        user_group = rng.integers(0, k, size=spec.n_users)
    else:
        user_group = rng.choice(k, size=spec.n_users, p=np.asarray(spec.group_weights) / sum(spec.group_weights))
    user_context = group_codes[user_group] + spec.context_noise * normal(spec.n_users, spec.context_dim)
    # Each group's context points the true router at its own head.
    router_context = group_codes / group_codes.norm(dim=1, keepdim=True) ** 2
    router_prompt = spec.prompt_weight * normal(k, spec.prompt_dim) / np.sqrt(spec.prompt_dim)

    user = rng.integers(0, spec.n_users, size=n)
    prompt = normal(n, spec.prompt_dim)
    context = user_context[torch.from_numpy(user)]
    resp_a, resp_b = normal(n, d), normal(n, d)

    logits = spec.router_sharpness * (prompt @ router_prompt.T + context @ router_context.T)
    weights = torch.softmax(logits, dim=-1)
    component = torch.multinomial(weights, 1, generator=gen).squeeze(1)
    margin_true = ((resp_a - resp_b) * heads[component]).sum(-1)
    a_wins = torch.rand(n, generator=gen) < torch.sigmoid(margin_true)
    chosen = torch.where(a_wins[:, None], resp_a, resp_b)
    rejected = torch.where(a_wins[:, None], resp_b, resp_a)

    data = EmbeddedPairs(
        chosen=chosen, rejected=rejected, prompt=prompt, context=context,
        group=np.char.add("g", user_group[user].astype(str)), user=np.char.add("u", user.astype(str)),
        meta={"synthetic": asdict(spec), "seed": seed}, source=f"<synthetic seed={seed}>",
    ).with_split(spec.test_fraction, seed)
    truth = Truth(
        heads=heads, router_prompt=router_prompt, router_context=router_context, sharpness=spec.router_sharpness,
        weights=weights, prob_chosen=torch.zeros(n), component=component, user_group=user_group,
    )
    truth.prob_chosen = truth.prob(data)
    return data, truth
