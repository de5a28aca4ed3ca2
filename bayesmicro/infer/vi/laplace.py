"""A linearised Laplace posterior over the heads and every router layer, around the MAP.

Why this and not SVI over the router: the router's hidden layer is where most of the error in π(x) sits, and a
posterior over the output layer alone (SVI, the hidden layer a type-II point estimate) leaves the credible intervals
of P(chosen ≻ rejected) far below their nominal coverage.
A Laplace posterior over every layer calibrates as well as mean-field SVI over them, deterministically and far
faster; predictions use the linearised router, because the GGN is a local approximation (``Fit``). Coverage stays
below nominal because the posterior is centred on the MAP router, softer than the routers that carry the posterior
mass; ``infer.vi.linearised`` and ``infer.vi.refine`` correct that. Figures: docs/posteriors.md.

Posterior: N(θ*, (F + Λ)⁻¹) with θ = (heads, router weights and biases), θ* the MAP, Λ the model's Gaussian prior
precisions (heads 1/prior_scale², router 1/router_prior_scale²) and F = Σ_i ∇p_i ∇p_iᵀ / (p_i (1 − p_i)) the Fisher
information of the Bernoulli outcome with p_i = Σ_k π_k(x_i) σ(Δ_ik) — the generalised Gauss–Newton matrix in the
outcome's logit, positive semi-definite where the Hessian of a mixture is not. The α·H(π) regulariser shapes the
mode but, like every non-likelihood term under a GGN, not the curvature.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

from bayesmicro.models.mixture import BTMixture

LAPLACE_MAX_PARAMS = 6000  # (P, P) float64 curvature: 6 000² · 8 B ≈ 290 MB
_CHUNK_FLOATS = 4_000_000  # per-pair gradients held at once
_EVIDENCE_MAX_FLOATS = 250_000_000  # mode_log_evidence's (n, P) float64 Jacobian: 2 GB


@dataclass
class LaplaceParams:
    """The flattened parameter vector θ: heads (K·d) then the router network's tensors in state-dict order."""

    names: list[str]
    shapes: list[torch.Size]
    n_heads: int

    @classmethod
    def of(cls, model: BTMixture) -> "LaplaceParams":
        named = list(model.router.net.named_parameters())
        return cls([n for n, _ in named], [p.shape for _, p in named], model.k * model.dim)

    @property
    def size(self) -> int:
        return self.n_heads + sum(math.prod(s) for s in self.shapes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{net parameter name: tensor} from θ[n_heads:] (..., P_router)."""
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = flat[..., i:i + size].reshape(*flat.shape[:-1], *shape)
            i += size
        return out


def supports_laplace(model: BTMixture) -> bool:
    return model.router.reads_input and model.k > 1 and LaplaceParams.of(model).size <= LAPLACE_MAX_PARAMS


@dataclass
class LaplaceCurvature:
    """The pieces of the linearised Laplace at θ*: ``theta`` (P,), ``fisher`` (P, P), the prior's diagonal
    ``prior_precision`` (P,) and Σ_i log p_i at θ* (``log_lik``), all float64, in ``layout``'s order."""

    layout: LaplaceParams
    theta: torch.Tensor
    fisher: torch.Tensor
    prior_precision: torch.Tensor
    log_lik: float

    def precision(self) -> torch.Tensor:
        """(P, P) posterior precision F + Λ."""
        return self.fisher + torch.diag(self.prior_precision)

    def slices(self) -> dict[str, slice]:
        """Where each tensor sits in θ: ``"heads"`` and the router's ``"net.<i>.<weight|bias>"`` state keys."""
        out, start = {"heads": slice(0, self.layout.n_heads)}, self.layout.n_heads
        for name, shape in zip(self.layout.names, self.layout.shapes):
            out[f"net.{name}"] = slice(start, start + math.prod(shape))
            start += math.prod(shape)
        return out


def laplace_curvature(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor,
                      router_x: torch.Tensor) -> LaplaceCurvature:
    """The Fisher (GGN) curvature at ``model``'s router and ``heads`` (K, d); diff: (n, d); router_x: (n, d_r)."""
    mode = _Mode(model, heads, router_x)
    fisher = torch.zeros(mode.theta.numel(), mode.theta.numel(), dtype=torch.float64)
    log_lik = 0.0
    for rows, chunk_log_lik in mode.scaled_gradients(diff):
        fisher.addmm_(rows.T, rows)
        log_lik += chunk_log_lik
    return LaplaceCurvature(mode.layout, mode.theta, fisher, mode.prior_precision, log_lik)


def mode_log_evidence(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor) -> float:
    """``laplace_log_evidence`` at the mode (``model``'s router, ``heads`` (K, d)) for any number of parameters P.

    F = JᵀJ (J: the n rows g_i / √(p_i(1 − p_i))) has rank ≤ n, so where P > n the determinant is taken in the
    n × n form, log det(F + Λ) = log det Λ + log det(I_n + J Λ⁻¹ Jᵀ): the same number without the (P, P) matrix
    (hh's prompt router: P = 50,306, n = 3,208). diff: (n, d); router_x: (n, d_r).
    """
    n, size = diff.shape[0], LaplaceParams.of(model).size
    if size <= n:
        curv = laplace_curvature(model, heads, diff, router_x)
        return laplace_log_evidence(curv, torch.linalg.cholesky(curv.precision()))
    if n * size > _EVIDENCE_MAX_FLOATS:
        raise ValueError(f"the Laplace evidence needs an ({n}, {size}) float64 Jacobian; at most "
                         f"{_EVIDENCE_MAX_FLOATS:,} entries are held")
    mode = _Mode(model, heads, router_x)
    scale = mode.prior_precision.rsqrt()
    jacobian = torch.empty(n, size, dtype=torch.float64)  # J Λ^-1/2
    log_lik, start = 0.0, 0
    for rows, chunk_log_lik in mode.scaled_gradients(diff):
        jacobian[start:start + len(rows)] = rows * scale
        start += len(rows)
        log_lik += chunk_log_lik
    gram = jacobian @ jacobian.T
    gram.diagonal().add_(1.0)
    quadratic = float((mode.prior_precision * mode.theta**2).sum())
    return log_lik - 0.5 * quadratic - float(torch.linalg.cholesky(gram).diagonal().log().sum())


class _Mode:
    """θ* = (heads, router weights) flattened in ``LaplaceParams`` order, the prior precisions Λ and
    p_i(θ) = Σ_k π_k(z_i; θ) σ(w_kᵀ x_i), all float64."""

    def __init__(self, model: BTMixture, heads: torch.Tensor, router_x: torch.Tensor):
        self.layout = layout = LaplaceParams.of(model)
        router = model.router
        theta = torch.cat([heads.detach().reshape(-1)] + [p.detach().reshape(-1) for p in router.net.parameters()])
        self.theta = theta.double()
        self.z = router.standardize(router_x).double()
        self.prior_precision = torch.full_like(self.theta, 1.0 / model.router_prior_scale**2)
        self.prior_precision[:layout.n_heads] = 1.0 / model.prior_scale**2
        net = copy.deepcopy(router.net).double()
        k, d = model.k, model.dim

        def prob(th: torch.Tensor, x: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
            log_w = torch.log_softmax(functional_call(net, layout.unflatten(th[layout.n_heads:]), (zi[None],))[0], -1)
            return (log_w.exp() * torch.sigmoid(th[:layout.n_heads].view(k, d) @ x)).sum()

        self.prob = prob

    def scaled_gradients(self, diff: torch.Tensor):
        """Chunks (rows (c, P), Σ log p_i over them) of g_i / √(p_i (1 − p_i)), g_i = ∇θ p_i: F = Σ rowsᵀ rows."""
        diff = diff.double()
        per_pair = vmap(self.prob, in_dims=(None, 0, 0))
        per_pair_grad = vmap(grad(self.prob), in_dims=(None, 0, 0))
        chunk = max(1, _CHUNK_FLOATS // self.theta.numel())
        for start in range(0, diff.shape[0], chunk):
            x, zi = diff[start:start + chunk], self.z[start:start + chunk]
            p = per_pair(self.theta, x, zi)
            rows = per_pair_grad(self.theta, x, zi) / (p * (1 - p)).clamp_min(1e-12).sqrt()[:, None]
            yield rows, float(p.clamp_min(1e-300).log().sum())


def laplace_posterior(model: BTMixture, heads: torch.Tensor, diff: torch.Tensor, router_x: torch.Tensor,
                      draws: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Draws from the linearised Laplace posterior around ``model``'s MAP router and the MAP ``heads`` (K, d).

    diff: (n, d); router_x: (n, d_r). Returns (head draws (S, K, d), router draws {"net.<i>.<weight|bias>":
    (S, ...)} for every router layer, info). Draws come in antithetic pairs θ* ± δ, so their mean is the MAP and
    the router's linearisation point (``Fit``) is exactly the mode the curvature was taken at.
    """
    curv = laplace_curvature(model, heads, diff, router_x)
    chol = torch.linalg.cholesky(curv.precision())
    head_draws, router_draws = gaussian_draws(model, curv, chol, curv.theta, draws, seed)
    info = {"router_posterior": "laplace", "curvature": "fisher (GGN)", "parameters": curv.layout.size,
            "log_evidence": laplace_log_evidence(curv, chol)}
    return head_draws, router_draws, info


def antithetic_normal(size: int, count: int, seed: int) -> torch.Tensor:
    """(size, count) float64 standard normal columns in pairs ε, −ε (count rounded up to even)."""
    half = torch.randn(size, (count + 1) // 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cat([half, -half], 1)


def gaussian_draws(model: BTMixture, curv: LaplaceCurvature, chol: torch.Tensor, mean: torch.Tensor, draws: int,
                   seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``draws`` antithetic draws m ± δ of N(mean (P,), (C Cᵀ)⁻¹), chol: C (P, P) lower, split into head draws
    (S, K, d) and router draws {"net.<i>.<weight|bias>": (S, ...)} in ``curv``'s layout."""
    return split_draws(model, curv.layout, flat_gaussian_draws(chol, mean, draws, seed).float())


def flat_gaussian_draws(chol: torch.Tensor, mean: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(S, P) float64 antithetic draws m ± δ of N(mean (P,), (C Cᵀ)⁻¹); chol: C (P, P) lower."""
    half = antithetic_normal(mean.numel(), draws, seed)[:, :(draws + 1) // 2]
    delta = torch.linalg.solve_triangular(chol.T, half, upper=True).T  # rows ~ N(0, (C Cᵀ)⁻¹)
    return mean + torch.cat([delta, -delta])[:draws]


def split_draws(model: BTMixture, layout: LaplaceParams,
                samples: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flat draws (S, P) → head draws (S, K, d) and router draws {"net.<i>.<weight|bias>": (S, ...)}."""
    router_draws = {f"net.{name}": v for name, v in layout.unflatten(samples[:, layout.n_heads:]).items()}
    return samples[:, :layout.n_heads].reshape(len(samples), model.k, model.dim), router_draws


def laplace_log_evidence(curv: LaplaceCurvature, chol: torch.Tensor) -> float:
    """Laplace log p(D) = log p(D | θ*) + log N(θ*; 0, Λ⁻¹) − ½ log det((F + Λ) / 2π), the 2π terms cancelling;
    ``chol``: the Cholesky factor of F + Λ."""
    prior = curv.prior_precision
    return float(curv.log_lik - 0.5 * (prior * curv.theta**2).sum() + 0.5 * prior.log().sum()
                 - chol.diagonal().log().sum())
