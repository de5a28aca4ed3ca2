"""The irreducible error of a single Bradley–Terry reward on a mixture population (MiCRo, Theorem 3.2).

Setting. Pair i has features x_i (prompt and both responses); a latent component z_i ∈ {1..K} with
π_ik = P(z_i = k | x_i) decides the label: P(y_i = 1 | x_i, z_i = k) = P*_ik = σ(s*_ik), s*_ik = r*_k(x, a_w) −
r*_k(x, a_l). Here y = 1 means "the response listed first wins"; we score P(chosen ≻ rejected), which is the same
thing for the observed label.

Quantities (each averaged over the evaluation pairs, i.e. a Monte-Carlo estimate of E_x):

- ρ = min_{i,k} π_ik, the theorem's assumption P(z = k | x) ≥ ρ for every x and k (checked on the pairs given);
- V = E_x Var_z[P*_z(x)] with the variance over z **uniform** on {1..K}: Var_z = (1/K) Σ_k (P*_k − mean_k P*_k)².
  The theorem's "E s*_k" is E[y | x, z = k] = σ(s*_k): the variance is of label probabilities, not of raw margins
  (a margin-space variance cannot bound a cross-entropy: margins ±1e3 give an unbounded variance while predicting ½
  costs only log 2);
- H = E_x Σ_k π_k h(P*_k), h(p) = −p log p − (1−p) log(1−p): the entropy of the labels under the truth, which knows z;
- L_CE(q) = E_x Σ_k π_k [−P*_k log q − (1 − P*_k) log(1 − q)]: the expected cross-entropy of any predictor q(x) that
  does not see z (a single BT reward q = σ(r(x, a_w) − r(x, a_l)) is one), with the label noise integrated out exactly.

Theorem: L_CE(q) ≥ 2ρK·V + H. Proof, pointwise in x: L_CE(q | x) = Σ_k π_k [h(P*_k) + KL(P*_k ‖ q)]; Pinsker gives
KL ≥ 2(P*_k − q)²; π_k ≥ ρ; and Σ_k (P*_k − q)² ≥ Σ_k (P*_k − mean P*)² = K·Var_z. A model that sees z (a mixture
whose router reads a context that determines z) can reach H; a single BT stays at least 2ρK·V above it.
"""

from __future__ import annotations

import torch

from bayesmicro.models.bt import reward_margins

_EPS = 1e-12


def component_probs(heads: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """P*_ik = σ(w_kᵀ(h_w − h_l)). heads: (K, d) true heads; diff: (n, d). Returns (n, K) float64."""
    return torch.sigmoid(reward_margins(heads.double(), diff.double()))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """h(p) in nats, elementwise, with h(0) = h(1) = 0."""
    p = p.double()
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def label_entropy(probs: torch.Tensor, weights: torch.Tensor) -> float:
    """H = mean_i Σ_k π_ik h(P*_ik). probs, weights: (n, K)."""
    return float((weights.double() * binary_entropy(probs)).sum(-1).mean())


def component_variance(probs: torch.Tensor) -> float:
    """V = mean_i Var_z[P*_iz] with z uniform on the K components (population variance, ddof = 0). probs: (n, K)."""
    return float(probs.double().var(dim=-1, unbiased=False).mean())


def expected_cross_entropy(q: torch.Tensor, probs: torch.Tensor, weights: torch.Tensor) -> float:
    """L_CE(q) = mean_i Σ_k π_ik [−P*_ik log q_ik − (1 − P*_ik) log(1 − q_ik)]; probs, weights: (n, K).

    q: (n,) predicted P(y = 1) of a model that does not see z (the same for every k), or (n, K) with q_ik the
    prediction when the model is shown z_i = k (e.g. through a context that encodes it)."""
    q = q.double().clamp(_EPS, 1 - _EPS)
    q = q[:, None] if q.ndim == 1 else q
    p = probs.double()
    return float((weights.double() * -(p * q.log() + (1 - p) * (1 - q).log())).sum(-1).mean())


def theorem_3_2(probs: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """The right side of Theorem 3.2 and its parts: {rho, k, variance, entropy, gap = 2ρK·V, bound = gap + H}.

    probs: (n, K) P*_ik; weights: (n, K) π_ik = P(z_i = k | x_i)."""
    k = probs.shape[-1]
    rho = float(weights.double().min())
    variance = component_variance(probs)
    entropy = label_entropy(probs, weights)
    gap = 2.0 * rho * k * variance
    return {"rho": rho, "k": k, "variance": variance, "entropy": entropy, "gap": gap, "bound": gap + entropy}
