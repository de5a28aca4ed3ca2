"""Hierarchical personalization: per-unit (user or context) offsets that shrink to stage 1, scales by empirical Bayes.

For a unit u (a user, a group) and its pairs i, with stage 1's heads w_k and router logits f(x_i) held fixed:

    P(chosen_i ≻ rejected_i | u) = Σ_k softmax(f(x_i) + b_u)_k · σ((w_k + δ_u)ᵀ Δ_i)
    δ_u ~ Normal(0, s² I_d)   (an offset on every head's weights)
    b_u ~ Normal(0, τ² I_K)   (an offset on the router's logits; none for K = 1)

- ``estimate_scales``: s and τ by empirical Bayes from the training units — MacKay's evidence fixed point
  s² = Σ_u ‖δ̂_u‖² / Σ_u γ_δ,u (γ the effective number of parameters the unit's pairs determine), with the
  Gauss–Newton Laplace approximation of each unit's marginal likelihood, computed in the unit's n_u × n_u dual form.
- ``adapt``: each unit's MAP offsets given its labelled pairs and the scales, with their Laplace posterior sd.
- ``fit_jointly``: seen units — the population and every unit's offsets fitted together: the joint MAP at the
  empirical-Bayes scales.
- ``UnitOffsets.predict_proba``: the plug-in prediction at the MAP offsets. A unit with no labelled pairs has zero
  offsets, so its prediction is stage 1's exactly; with few labels the prior keeps the offsets near zero.

Every likelihood evaluation goes through ``models.bt.mixture_log_prob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.map import Schedule, curvature_transform, distinct_rows, run_lbfgs
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.models.bt import entropy, mixture_log_prob, reward_margins

UNIT_KEYS = ("user", "group")
_PROB_FLOOR = 1e-6  # p(1 − p) in the Fisher is floored here (pairs predicted with certainty carry no curvature)
_DUAL_BUDGET = 4_000_000  # elements of the padded (units, n_u, n_u) blocks built at a time
STEP_MAP_ITER = 100  # L-BFGS iterations of the warm-started MAP inside each empirical-Bayes step


@dataclass(frozen=True)
class UnitScales:
    """Prior sds of the per-unit offsets: ``head`` (s, on head weights) and ``logit`` (τ, on router logits; 0 for
    K = 1), with how the empirical-Bayes fixed point ended and the Laplace log evidence of the training units."""

    head: float
    logit: float
    log_evidence: float = math.nan
    iterations: int = 0
    converged: bool = True
    units: int = 0

    def as_dict(self) -> dict:
        return {"head": self.head, "logit": self.logit, "log_evidence": self.log_evidence,
                "iterations": self.iterations, "converged": self.converged, "units": self.units}


@dataclass
class UnitOffsets:
    """MAP offsets of the units named in ``units`` (their ``key`` labels): ``head`` (U, d), ``logit`` (U, K), their
    Laplace posterior sds ``head_sd`` (U,) (the mean over the d coordinates) and ``n_labels`` (U,)."""

    fit: Fit
    key: str
    units: tuple[str, ...]
    head: torch.Tensor
    logit: torch.Tensor
    scales: UnitScales
    n_labels: np.ndarray
    head_sd: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    history: list[float] = field(default_factory=list)  # fit_jointly: the joint objective per pair, start and end

    def index(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) each pair's row in ``units``; −1 for a unit without labelled pairs."""
        position = {unit: j for j, unit in enumerate(self.units)}
        return torch.as_tensor([position.get(str(label), -1) for label in _labels(data, self.key).tolist()],
                               dtype=torch.int64)

    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) P(chosen ≻ rejected) at the MAP offsets of each pair's unit; a pair of a unit without labelled pairs
        gets stage 1's ``predict_proba`` itself."""
        prob = self.fit.predict_proba(data)
        index = self.index(data)
        known = torch.nonzero(index >= 0).squeeze(1)
        if known.numel():
            part = data.subset(known.numpy())
            base = StageOne.of(self.fit, part)
            rows = index[known]
            prob[known] = base.log_lik(self.head[rows], self.logit[rows]).exp().to(prob.dtype)
        return prob


@dataclass
class StageOne:
    """Stage 1's fixed quantities on n pairs (float64): ``diff`` (n, d), ``margins`` Δ_i w_k (n, K) and the router's
    ``log_weights`` (n, K) at the posterior mean heads and the point router."""

    diff: torch.Tensor
    margins: torch.Tensor
    log_weights: torch.Tensor

    @classmethod
    def of(cls, fit: Fit, data: EmbeddedPairs) -> "StageOne":
        fit.check_compatible(data)
        diff = data.diff().double()
        heads = fit.heads.double().mean(0)
        return cls(diff, reward_margins(heads, diff), fit.log_weights(data).double())

    def log_lik(self, head: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """(n,) log P(chosen ≻ rejected) with per-pair offsets ``head`` (n, d) and ``logit`` (n, K)."""
        log_w = torch.log_softmax(self.log_weights + logit, -1)
        return mixture_log_prob(log_w, self.margins + (self.diff * head).sum(-1, keepdim=True))


def _labels(data: EmbeddedPairs, key: str) -> np.ndarray:
    if key not in UNIT_KEYS:
        raise BadInput(f"units are one of {UNIT_KEYS}, got {key!r}")
    labels = getattr(data, key)
    if labels is None:
        raise BadInput(f"personalizing by {key} needs a '{key}' label for every pair", source=data.source)
    return labels


def _map_offsets(base: StageOne, unit: torch.Tensor, n_units: int, scales: UnitScales,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None,
                 max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint MAP of every unit's offsets (their objectives are independent): full-batch L-BFGS in float64 on
    −Σ_i log p_i + Σ_u (‖δ_u‖²/2s² + ‖b_u‖²/2τ²). unit: (n,) each pair's unit in 0..n_units−1."""
    d, k = base.diff.shape[1], base.log_weights.shape[1]
    head = torch.zeros(n_units, d, dtype=torch.float64) if start is None else start[0].clone()
    logit = torch.zeros(n_units, k, dtype=torch.float64) if start is None else start[1].clone()
    if scales.head <= 0 and (scales.logit <= 0 or k == 1):
        return head.zero_(), logit.zero_()
    fit_logit = k > 1 and scales.logit > 0
    params = [head.requires_grad_()] + ([logit.requires_grad_()] if fit_logit else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-11)
    n = base.diff.shape[0]

    def closure():
        opt.zero_grad()
        loss = -base.log_lik(head[unit], logit[unit]).sum() + head.pow(2).sum() / (2 * scales.head ** 2)
        if fit_logit:
            loss = loss + logit.pow(2).sum() / (2 * scales.logit ** 2)
        loss = loss / n
        loss.backward()
        return loss

    opt.step(closure)
    return head.detach(), logit.detach()


def _dual_terms(base: StageOne, unit: np.ndarray, head: torch.Tensor, logit: torch.Tensor,
                scales: UnitScales) -> tuple[float, float, float, torch.Tensor]:
    """At the MAP offsets, summed over units: (γ_δ, γ_b, Σ_u log det M_u, per-unit mean posterior variance of δ_u's
    coordinates (U,)), with M_u = I + τ² G_b G_bᵀ + s² G_δ G_δᵀ the unit's n_u × n_u Gauss–Newton matrix and G the
    per-pair gradients of p_i scaled by 1/√(p_i(1 − p_i))."""
    index = torch.from_numpy(unit)
    log_w = torch.log_softmax(base.log_weights + logit[index], -1)
    margins = base.margins + (base.diff * head[index]).sum(-1, keepdim=True)
    weights, sig = log_w.exp(), torch.sigmoid(margins)
    p = (weights * sig).sum(-1)
    scale = (p * (1 - p)).clamp_min(_PROB_FLOOR).rsqrt()
    grad_logit = weights * (sig - p.unsqueeze(-1)) * scale.unsqueeze(-1)  # (n, K)
    grad_head = (weights * sig * (1 - sig)).sum(-1) * scale  # (n,): G_δ row i = grad_head_i Δ_i
    s2, t2 = scales.head ** 2, (scales.logit ** 2 if logit.shape[1] > 1 else 0.0)
    d = base.diff.shape[1]
    order = np.argsort(unit, kind="stable")
    bounds = np.searchsorted(unit[order], np.arange(head.shape[0] + 1))
    gamma_head = gamma_logit = logdet = 0.0
    variance = torch.full((head.shape[0],), s2, dtype=torch.float64)
    for chunk in _chunks_by_size(np.diff(bounds)):
        size = int(np.diff(bounds)[chunk].max())
        rows = torch.full((chunk.size, size), -1, dtype=torch.int64)
        for j, u in enumerate(chunk):
            members = torch.from_numpy(order[bounds[u]:bounds[u + 1]])
            rows[j, :members.numel()] = members
        valid = rows >= 0
        safe = rows.clamp_min(0)
        g_head = base.diff[safe] * (grad_head[safe] * valid).unsqueeze(-1)  # (C, m, d)
        g_logit = grad_logit[safe] * valid.unsqueeze(-1)  # (C, m, K)
        a_head = g_head @ g_head.transpose(1, 2)
        a_logit = g_logit @ g_logit.transpose(1, 2)
        eye = torch.eye(size, dtype=torch.float64)
        m = eye + s2 * a_head + t2 * a_logit
        chol = torch.linalg.cholesky(m)
        logdet += float(2 * chol.diagonal(dim1=1, dim2=2).log().sum())
        solve_head = torch.cholesky_solve(a_head, chol)
        gamma_head += s2 * float(solve_head.diagonal(dim1=1, dim2=2).sum())
        if t2:
            gamma_logit += t2 * float(torch.cholesky_solve(a_logit, chol).diagonal(dim1=1, dim2=2).sum())
        # tr(H⁻¹)_δδ / d = s² − s⁴ tr(G_δᵀ M⁻¹ G_δ) / d
        variance[torch.from_numpy(chunk)] = s2 - s2 * s2 * solve_head.diagonal(dim1=1, dim2=2).sum(-1) / d
    return gamma_head, gamma_logit, logdet, variance


def _chunks_by_size(sizes: np.ndarray):
    """Unit numbers in chunks of similar size (ascending) whose padded (chunk, n_u, n_u) blocks stay within
    ``_DUAL_BUDGET`` elements (a single unit may exceed it alone); units without pairs are skipped."""
    chunk: list[int] = []
    for u in np.argsort(sizes, kind="stable"):
        if sizes[u] == 0:
            continue
        if chunk and (len(chunk) + 1) * int(sizes[u]) ** 2 > _DUAL_BUDGET:
            yield np.asarray(chunk)
            chunk = []
        chunk.append(int(u))
    if chunk:
        yield np.asarray(chunk)


def _unit_codes(data: EmbeddedPairs, key: str) -> tuple[tuple[str, ...], np.ndarray]:
    units, codes = np.unique(_labels(data, key).astype(str), return_inverse=True)
    return tuple(units.tolist()), codes.astype(np.int64)


def estimate_scales(fit: Fit, data: EmbeddedPairs, key: str = "user", max_iter: int = 50,
                    tol: float = 1e-3, evidence_tol: float = 0.1) -> UnitScales:
    """Empirical-Bayes prior sds of the per-unit offsets from ``data``'s units (its ``key`` labels), stage 1 (``fit``)
    fixed: MacKay's fixed point, stopped when both scales move by less than ``tol`` (relative) or the Laplace log
    evidence by less than ``evidence_tol`` nats (where the evidence is flat in the scales, further steps cannot
    change the fit's support for them)."""
    units, codes = _unit_codes(data, key)
    base = StageOne.of(fit, data)
    k = base.log_weights.shape[1]
    heads = fit.heads.double().mean(0)
    scales = UnitScales(head=0.3 * float(heads.pow(2).mean().sqrt()) or 0.1, logit=1.0 if k > 1 else 0.0)
    unit = torch.from_numpy(codes)
    start, previous, converged, iteration = None, -math.inf, False, 0
    for iteration in range(1, max_iter + 1):
        head, logit = _map_offsets(base, unit, len(units), scales, start, max_iter=STEP_MAP_ITER)
        start = (head, logit)
        gamma_head, gamma_logit, logdet, _ = _dual_terms(base, codes, head, logit, scales)
        evidence = _log_evidence(base, unit, head, logit, scales, logdet)
        new = UnitScales(head=math.sqrt(float(head.pow(2).sum()) / gamma_head) if gamma_head > 1e-12 else 0.0,
                         logit=math.sqrt(float(logit.pow(2).sum()) / gamma_logit)
                         if k > 1 and gamma_logit > 1e-12 else 0.0)
        moved = max(abs(new.head - scales.head) / max(scales.head, 1e-12),
                    abs(new.logit - scales.logit) / max(scales.logit, 1e-12) if k > 1 else 0.0)
        if abs(evidence - previous) < evidence_tol:
            converged = True
            break
        scales, previous = new, evidence
        if moved < tol or (new.head == 0.0 and new.logit == 0.0):
            converged = True
            break
    head, logit = _map_offsets(base, unit, len(units), scales, start)  # the chosen scales' MAP, to convergence
    evidence = _log_evidence(base, unit, head, logit, scales, _dual_terms(base, codes, head, logit, scales)[2])
    return UnitScales(scales.head, scales.logit, evidence, iteration, converged, len(units))


def _log_evidence(base: StageOne, unit: torch.Tensor, head: torch.Tensor, logit: torch.Tensor, scales: UnitScales,
                  logdet: float) -> float:
    """Laplace log p(data | scales) summed over units, at the MAP offsets: log-likelihood − the priors' quadratic
    terms − ½ Σ_u log det M_u (the Gaussian normalising constants cancel against the Laplace volume)."""
    penalty = (float(head.pow(2).sum()) / (2 * scales.head ** 2) if scales.head > 0 else 0.0) + \
        (float(logit.pow(2).sum()) / (2 * scales.logit ** 2) if scales.logit > 0 else 0.0)
    return float(base.log_lik(head[unit], logit[unit]).sum()) - penalty - 0.5 * logdet


def adapt(fit: Fit, labelled: EmbeddedPairs | None, scales: UnitScales, key: str = "user") -> UnitOffsets:
    """Each unit's MAP offsets given its labelled pairs (``labelled``: any number per unit, None or empty: none),
    the prior sds ``scales`` and stage 1 (``fit``) fixed."""
    k, d = fit.config.k, fit.config.dim
    if labelled is None or len(labelled) == 0:
        empty = torch.zeros(0, d, dtype=torch.float64)
        return UnitOffsets(fit, key, (), empty, torch.zeros(0, k, dtype=torch.float64), scales,
                           np.zeros(0, dtype=np.int64), torch.zeros(0, dtype=torch.float64))
    units, codes = _unit_codes(labelled, key)
    base = StageOne.of(fit, labelled)
    head, logit = _map_offsets(base, torch.from_numpy(codes), len(units), scales)
    _, _, _, variance = _dual_terms(base, codes, head, logit, scales)
    return UnitOffsets(fit, key, units, head, logit, scales, np.bincount(codes, minlength=len(units)),
                       variance.clamp_min(0).sqrt())


def fit_jointly(fit: Fit, data: EmbeddedPairs, scales: UnitScales, key: str = "user",
                schedule: Schedule | None = None, personal: np.ndarray | None = None) -> UnitOffsets:
    """Seen units: the joint MAP of the population (``fit``'s heads and router, under its priors) and every unit's
    offsets on ``data`` (the units' training pairs), at the prior sds ``scales``. ``personal``: (n,) bool, the pairs
    that carry their unit's offsets (default: all); the others inform the population alone. Starts at stage 1 with
    each unit's offsets given its personal pairs (``adapt``) and runs full-batch L-BFGS over all of them together,
    with ``infer.map``'s stopping rule. The returned offsets' ``fit`` is the refitted population (a MAP) and
    ``history`` the joint objective per pair at the start and at the end (``_JointProblem.objective``)."""
    personal = np.ones(len(data), dtype=bool) if personal is None else np.asarray(personal, dtype=bool)
    if personal.shape != (len(data),):
        raise BadInput(f"personal must be one flag per pair ({len(data)}), got shape {personal.shape}",
                       argument="personal")
    own = data.subset(personal)
    start = adapt(fit, own, scales, key)
    units, codes = _unit_codes(own, key)
    unit = np.full(len(data), len(units), dtype=np.int64)  # len(units): a pair without offsets
    unit[personal] = codes
    problem = _JointProblem(fit, data, start, torch.from_numpy(unit))
    with torch.no_grad():
        before = float(problem.objective())
    info = run_lbfgs(problem.parameters(), problem.objective, schedule or Schedule(), None)
    population, head, logit = problem.solution(info)
    _, _, _, variance = _dual_terms(StageOne.of(population, own), codes, head, logit, scales)
    return UnitOffsets(population, key, start.units, head, logit, scales, start.n_labels,
                       variance.clamp_min(0).sqrt(), history=[before, info.objective])


class _JointProblem:
    """The joint MAP objective of ``fit_jointly`` over the population's heads (in ``curvature_transform``'s
    coordinates), its router's parameters and the units' offsets (in units of their prior sds), float32."""

    def __init__(self, fit: Fit, data: EmbeddedPairs, start: UnitOffsets, unit: torch.Tensor):
        self.config, self.unit, self.scales = replace(fit.config, inference="map"), unit, start.scales
        self.model = fit.mode_model()
        self.diff = data.diff().float()
        self.router_x, self.router_index = distinct_rows(self.config.router_input(data))
        self.transform = curvature_transform(self.diff, self.config.prior_scale)
        heads = fit.heads.float().mean(0)
        self.white = torch.linalg.solve(self.transform, heads.T).T.contiguous().requires_grad_()
        self.unit_head = (start.head.float() / max(self.scales.head, 1e-30)).requires_grad_()
        self.fit_logit = self.config.k > 1 and self.scales.logit > 0
        self.unit_logit = (start.logit.float() / max(self.scales.logit, 1e-30)).requires_grad_()

    def parameters(self) -> list[torch.Tensor]:
        return ([self.white, self.unit_head] + ([self.unit_logit] if self.fit_logit else [])
                + [p for p in self.model.router.parameters() if p.requires_grad])

    def objective(self) -> torch.Tensor:
        """−(log-likelihood + α · router entropy + log priors) / n (constants dropped)."""
        config, router, n = self.config, self.model.router, self.diff.shape[0]
        heads = self.white @ self.transform
        log_w = router.log_weights(self.router_x, n if self.router_index is None else self.router_x.shape[0])
        log_w = log_w if self.router_index is None else log_w[self.router_index]
        if self.fit_logit:
            log_w = torch.log_softmax(log_w + self.scales.logit * _with_zero_row(self.unit_logit)[self.unit], -1)
        shift = self.scales.head * (self.diff * _with_zero_row(self.unit_head)[self.unit]).sum(-1, keepdim=True)
        log_lik = mixture_log_prob(log_w, reward_margins(heads, self.diff) + shift).sum()
        if config.alpha and config.k > 1:
            log_lik = log_lik + config.alpha * entropy(log_w).sum()
        prior = heads.pow(2).sum() / (2 * config.prior_scale ** 2) + 0.5 * self.unit_head.pow(2).sum()
        if self.fit_logit:
            prior = prior + 0.5 * self.unit_logit.pow(2).sum()
        if router.reads_input:
            prior = prior - router.log_prior(config.router_prior_scale)
        return (prior - log_lik) / n

    def solution(self, info) -> tuple[Fit, torch.Tensor, torch.Tensor]:
        """(the population as a one-draw Fit, the units' head offsets (U, d) and logit offsets (U, K), float64)."""
        heads = (self.white @ self.transform).detach()
        router_state = {name: value.detach().clone() for name, value in self.model.router.state_dict().items()}
        population = Fit(self.config, heads.unsqueeze(0), router_state,
                         {"joint": {"objective": info.objective, "iterations": info.iterations,
                                    "converged": info.converged}})
        logit = self.scales.logit * self.unit_logit.detach().double() if self.fit_logit else \
            torch.zeros_like(self.unit_logit, dtype=torch.float64)
        return population, self.scales.head * self.unit_head.detach().double(), logit


def _with_zero_row(offsets: torch.Tensor) -> torch.Tensor:
    """(U + 1, ·): the units' offsets and a last row of zeros, the offsets of a pair that carries none."""
    return torch.cat([offsets, offsets.new_zeros(1, offsets.shape[1])])


__all__ = ["StageOne", "UnitOffsets", "UnitScales", "adapt", "estimate_scales", "fit_jointly"]
