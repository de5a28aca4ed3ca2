"""MAP fitting with Pyro SVI in the modern style: module-local params, ``Trace_ELBO()(model, guide)`` as a torch loss.

Full-batch problems use L-BFGS (strong Wolfe) run to convergence: it stops when the objective per pair changes by less
than ``Schedule.tol`` (relative) over one block of iterations, moving the heads in coordinates that whiten one head's
curvature at the start (``curvature_transform``; the objective and its optimum are unchanged); larger problems use
minibatch AdamW with 5 % warmup and cosine decay (the paper's stage-1 recipe). A mixture's heads start from the
single-BT solution plus a small symmetry-breaking perturbation, so its training fit starts where K = 1 ends.
Several restarts; the one with the best training log-likelihood wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value

from bayesmicro.errors import BadInput
from bayesmicro.methods import Optimizer
from bayesmicro.models.mixture import BTMixture

# multiply-adds of one full-batch evaluation of the objective up to which `auto` fits by L-BFGS (a second or two on
# one core; a converged fit takes a few hundred); AdamW minibatches beyond. Every problem of at most 2·10⁷ feature
# values n·(d + d_router) is under it, whatever its router (at most 2·10⁷·128 for the hidden layer)
FULL_BATCH_LIMIT = 3_000_000_000
ADAM_WORK_BUDGET = 250_000_000  # n·(d + d_router)·epochs the default AdamW schedule spends (at least 2 epochs)


@dataclass
class Schedule:
    """How to optimise. ``optimizer='auto'`` picks L-BFGS for small problems and AdamW minibatches otherwise."""

    optimizer: str = "auto"
    max_iter: int = 3000  # L-BFGS iterations at most
    tol: float = 1e-7  # L-BFGS stops when the objective per pair moves by less than tol·max(1, |objective|) in a block
    epochs: int = 20  # AdamW epochs
    batch_size: int = 512
    lr: float = 2e-3
    warmup: float = 0.05
    work_budget: float | None = ADAM_WORK_BUDGET  # None: always run ``epochs``

    def adam_epochs(self, n: int, width: int) -> int:
        """AdamW epochs: ``epochs``, capped on large problems at max(2, work_budget / (n·width)) — beyond that the
        fit costs minutes and, with a weak prior on wide features, mostly overfits (early stopping)."""
        if self.work_budget is None:
            return self.epochs
        return max(1, min(self.epochs, max(2, int(self.work_budget // max(1, n * width)))))

    def __post_init__(self) -> None:
        if self.optimizer not in tuple(Optimizer):
            raise BadInput(f"optimizer must be auto, lbfgs or adam, got {self.optimizer!r}")
        for name in ("max_iter", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"lr must be a finite number > 0, got {self.lr}")
        if not 0.0 <= self.warmup < 1.0:
            raise BadInput(f"warmup must be in [0, 1), got {self.warmup}")
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise BadInput(f"tol must be a finite number > 0, got {self.tol}")

    def resolve(self, cost: int) -> str:
        """The optimizer: the one asked for, or for ``auto`` L-BFGS when one full-batch evaluation costs at most
        ``FULL_BATCH_LIMIT`` multiply-adds (``full_batch_cost``), else AdamW."""
        if self.optimizer not in tuple(Optimizer):
            raise ValueError(f"optimizer must be auto, lbfgs or adam, got {self.optimizer!r}")
        if self.optimizer != Optimizer.AUTO:
            return self.optimizer
        return Optimizer.LBFGS.value if cost <= FULL_BATCH_LIMIT else Optimizer.ADAM.value


def full_batch_cost(model: BTMixture, diff: torch.Tensor, router_rows: torch.Tensor | None) -> int:
    """Multiply-adds of one full-batch evaluation of ``model``'s objective: the K heads on the n pairs (n·d·K) and
    the router's hidden layer on its distinct inputs ``router_rows`` (m, d_r) (``distinct_rows``: pairs that share a
    prompt share its row), m·d_r·hidden."""
    heads = diff.shape[0] * diff.shape[1] * model.k
    if router_rows is None or not model.router.reads_input:
        return heads
    return heads + router_rows.shape[0] * router_rows.shape[1] * model.router.net[0].out_features


def rms_norm(diff: torch.Tensor) -> float:
    """sqrt(mean_i ‖Δ_i‖²) of diff (n, d), a block of 2²⁰ values at a time (no (n, d) temporary), summed in float64.

    Each block's sum of squares is one dot product in the block's dtype — a float64 copy of every block cost 0.3 s
    of a 3 s stage-1 fit — and is redone in float64 only where that under- or overflows (|Δ| beyond ~1e±18)."""
    total = 0.0
    for block in diff.reshape(-1).split(1 << 20):
        part = float(block.dot(block)) if block.dtype == torch.float32 else math.nan
        if not (math.isfinite(part) and part > 1e-30):
            part = float(block.double().dot(block.double()))
        total += part
    return math.sqrt(total / max(1, diff.shape[0]))


def initial_heads(k: int, diff: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random heads whose margins have sd ≈ 0.5 on the data, whatever the feature scale."""
    return torch.randn(k, diff.shape[1], generator=gen) * (0.5 / max(rms_norm(diff), 1e-8))


PRECONDITION_MAX_DIM = 4096  # above this the (d, d) eigendecomposition is left out (heads keep the rms scaling)


def curvature_transform(diff: torch.Tensor, prior_scale: float) -> torch.Tensor:
    """(d, d) T = H^(−1/2), H = ¼ ΔᵀΔ / n + I / (n σ²): the Hessian of one head's objective per pair at zero margins
    (diff Δ: (n, d); σ: the head prior sd). With heads = v T, the objective's curvature in v starts near the identity,
    so L-BFGS's first steps are well scaled along every direction of anisotropic features."""
    n = diff.shape[0]
    gram = (diff.T @ diff).double() if diff.dtype == torch.float32 else diff.double().T @ diff.double()
    curvature = 0.25 * gram / n + torch.eye(diff.shape[1], dtype=torch.float64) / (n * prior_scale ** 2)
    values, vectors = torch.linalg.eigh(curvature)
    return ((vectors * values.clamp_min(1e-30).rsqrt()) @ vectors.T).to(diff.dtype)


class PreconditionedDelta(PyroModule):
    """A MAP guide for the ``heads`` site in preconditioned coordinates: heads = ``white`` (K, d) · ``transform``
    (d, d). The point, and so the objective, are those of ``AutoDelta``; only the coordinates L-BFGS moves in differ."""

    def __init__(self, start: torch.Tensor, transform: torch.Tensor):
        super().__init__()
        self.register_buffer("transform", transform)
        self.white = torch.nn.Parameter(torch.linalg.solve(transform, start.T).T.contiguous())

    def heads(self) -> torch.Tensor:
        """(K, d) the heads at the current point."""
        return self.white @ self.transform

    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The point, as ``AutoDelta.median`` gives it."""
        return {"heads": self.heads()}

    def forward(self, *args, **kwargs) -> None:
        pyro.sample("heads", dist.Delta(self.heads()).to_event(2))


LBFGS_BLOCK = 20  # L-BFGS iterations between convergence checks
SYMMETRY_BREAK = 0.1  # perturbation of heads started from one solution, relative to initial_heads' margin sd


@dataclass
class ModeInfo:
    """How one MAP optimisation ended: the objective per pair (negative log joint / n), the optimizer that ran, its
    iterations (L-BFGS) or epochs (AdamW), and whether the stopping rule was met (AdamW runs its epochs: False)."""

    objective: float
    optimizer: str
    iterations: int
    converged: bool

    @property
    def record(self) -> dict:
        """The fields as a JSON-ready dict (a run's summary records one per restart)."""
        return asdict(self)


def start_heads(k: int, diff: torch.Tensor, gen: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
    """(K, d) initial heads: ``start`` (1, d) or (K, d) — e.g. the single-BT solution — plus a small random
    perturbation that breaks the symmetry between identical heads; random heads (``initial_heads``) without it."""
    noise = initial_heads(k, diff, gen)
    if start is None:
        return noise
    return start.expand(k, diff.shape[1]).clone() + (SYMMETRY_BREAK * noise if k > 1 else 0.0)


def fit_map_once(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, seed: int,
                 schedule: Schedule, on_step: Callable[[], None] | None = None,
                 start: torch.Tensor | None = None) -> tuple[torch.Tensor, ModeInfo]:
    """Fit one restart in place on ``model``; returns (heads (K, d), how the optimisation ended). ``start``: (1, d)
    or (K, d) heads to start from (see ``start_heads``)."""
    n = diff.shape[0]
    distinct = distinct_rows(router_x)  # full-batch steps run the router once per distinct input
    method = schedule.resolve(full_batch_cost(model, diff, distinct[0]))
    # L-BFGS's first step and stopping tolerances are absolute, so it stalls when margins are far from O(1) (features
    # ×1e4, or near-duplicate responses 1e-7 apart). Fit w' = s·w on Δ/s (s = rms‖Δ‖) with the prior scaled to
    # Normal(0, σ·s): the same optimum, in units where margins are O(1).
    scale = max(rms_norm(diff), 1e-30) if method == Optimizer.LBFGS else 1.0
    diff = diff / scale if scale != 1.0 else diff
    start = None if start is None else start * scale
    prior_scale, model.prior_scale = model.prior_scale, model.prior_scale * scale
    try:
        heads, info = _fit_map_scaled(model, diff, router_x, seed, schedule, method, on_step, start, distinct)
    finally:
        model.prior_scale = prior_scale
    # back to the caller's units; the objective drops the prior's log-Jacobian K·d·log s / n
    info = ModeInfo(info.objective - model.k * diff.shape[1] * math.log(scale) / n, info.optimizer, info.iterations,
                    info.converged)
    return heads / scale, info


def distinct_rows(router_x: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(distinct rows (m, d_r), index (n,) of each pair's row) when pairs share router inputs (m < n), else
    (router_x, None): the router then runs on m rows per step instead of n (prompts asked of many pairs)."""
    if router_x is None:
        return None, None
    rows, index = torch.unique(router_x, dim=0, return_inverse=True)
    return (rows, index) if rows.shape[0] < router_x.shape[0] else (router_x, None)


def _fit_map_scaled(model: BTMixture, diff: torch.Tensor, router_x: torch.Tensor | None, seed: int,
                    schedule: Schedule, method: str, on_step, start: torch.Tensor | None,
                    distinct: tuple[torch.Tensor | None, torch.Tensor | None]) -> tuple[torch.Tensor, ModeInfo]:
    n = diff.shape[0]
    pyro.set_rng_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    for layer in model.router.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    if router_x is not None:
        model.router.standardize_from(router_x)
    heads0 = start_heads(model.k, diff, gen, start)
    if method == Optimizer.LBFGS and diff.shape[1] <= PRECONDITION_MAX_DIM:
        guide = PreconditionedDelta(heads0, curvature_transform(diff, model.prior_scale))
    else:
        guide = AutoDelta(model, init_loc_fn=init_to_value(values={"heads": heads0}))
    elbo = Trace_ELBO()(model, guide)
    # full batch: the router runs once per distinct input; minibatches index the pairs' own rows
    loss_on = per_pair_loss(elbo, diff, *(distinct if method == Optimizer.LBFGS else (router_x,)))
    params = [p for p in elbo.parameters() if p.requires_grad]
    if method == Optimizer.LBFGS:
        info = run_lbfgs(params, lambda: loss_on(None), schedule, on_step)
    else:
        width = diff.shape[1] + (0 if router_x is None else router_x.shape[1])
        epochs = schedule.adam_epochs(n, width)
        info = ModeInfo(_run_adam(params, loss_on, n, schedule, epochs, gen, on_step), "adam", epochs, False)
    return guide.median()["heads"].detach().clone(), info


def per_pair_loss(elbo: torch.nn.Module, diff: torch.Tensor, router_x: torch.Tensor | None,
                  router_index: torch.Tensor | None = None) -> Callable[[torch.Tensor | None], torch.Tensor]:
    """``loss_on(idx)``: the ELBO loss on pairs ``idx`` (None: all) scaled to the full data, per pair.
    ``router_index`` (n,): pair i's router input is ``router_x[router_index[i]]`` (``distinct_rows``).
    Calling it once here materialises the guide's parameters, so ``elbo.parameters()`` is complete afterwards."""
    n = diff.shape[0]

    def loss_on(idx: torch.Tensor | None) -> torch.Tensor:
        if router_index is not None:
            index = router_index if idx is None else router_index[idx]
            return elbo(diff if idx is None else diff[idx], router_x, size=n, router_index=index) / n
        if idx is None:
            return elbo(diff, router_x, size=n) / n
        return elbo(diff[idx], None if router_x is None else router_x[idx], size=n) / n

    loss_on(torch.arange(min(n, 2)))
    return loss_on


def run_lbfgs(params, closure_loss, schedule: Schedule, on_step) -> ModeInfo:
    """Full-batch L-BFGS in blocks of ``LBFGS_BLOCK`` iterations until the objective moves by less than
    ``schedule.tol`` (relative) over a block, or ``schedule.max_iter`` iterations ran. When L-BFGS halts inside a
    block (its line search stalls in float32, e.g. near the saddle of identical heads) it restarts with a fresh
    history; convergence is judged by the objective alone."""

    def new_optimizer() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_BLOCK, history_size=20,
                                 line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    opt = new_optimizer()

    def closure():
        opt.zero_grad()
        loss = closure_loss()
        loss.backward()
        return loss

    previous, iterations, converged = float(closure_loss().detach()), 0, False
    while iterations < schedule.max_iter:
        before = opt.state[opt._params[0]].get("n_iter", 0)
        opt.step(closure)
        done = opt.state[opt._params[0]]["n_iter"] - before
        iterations, halted = iterations + done, done < LBFGS_BLOCK
        loss = float(closure_loss().detach())
        if on_step:
            on_step()
        if abs(previous - loss) <= schedule.tol * max(1.0, abs(loss)):
            converged = True
            break
        previous = loss
        if halted:
            opt = new_optimizer()
    return ModeInfo(float(closure_loss().detach()), "lbfgs", iterations, converged)


def _run_adam(params, loss_on, n: int, schedule: Schedule, epochs: int, gen: torch.Generator, on_step) -> float:
    batch = min(schedule.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = epochs * steps_per_epoch
    warm = max(1, int(schedule.warmup * total))
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm))))
    running = 0.0
    for _ in range(epochs):
        running = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch):
            opt.zero_grad()
            loss = loss_on(idx)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(idx) / n
        if on_step:
            on_step()
    return running
