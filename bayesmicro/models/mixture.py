"""Pyro models: a mixture of K linear BT heads with a router in the model, the component summed out.

``BTMixture(k=1, router="none")`` is the single BT model. The router is a learned gating network (point-estimated);
the heads carry a Gaussian prior and are the latent variables inference targets.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from bayesmicro.methods import Router as RouterKind
from bayesmicro.models.bt import entropy, mixture_log_prob, reward_margins

ROUTERS: tuple[str, ...] = tuple(kind.value for kind in RouterKind)
LABEL_ROUTERS: tuple[str, ...] = tuple(kind.value for kind in RouterKind if kind.reads_label)  # one-hot of a label
MIN_INPUT_SCALE = 1e-6  # floor of the router's input sd: columns at it are constant on the training data
_STANDARDIZE_ROWS = 512  # rows per block of the standardisation's second pass


class Router(PyroModule):
    """π(x) = softmax(f(x)). ``none``: static logits shared by all pairs (MaxMin-style baseline);
    ``prompt`` / ``context`` / ``user`` / ``group``: one hidden layer (paper: 128 units) on standardised router input
    (the prompt embedding; [prompt; context]; the one-hot of the pair's user or group label)."""

    def __init__(self, kind: str, k: int, input_dim: int = 0, hidden: int = 128):
        super().__init__()
        if kind not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {kind!r}")
        self.kind, self.k = (str(kind) if k > 1 else RouterKind.NONE.value), k  # one head needs no router
        if self.kind == RouterKind.NONE:
            self.logits = nn.Parameter(torch.zeros(k))
        else:
            self.register_buffer("input_mean", torch.zeros(input_dim))
            self.register_buffer("input_scale", torch.ones(input_dim))
            self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, k))

    @property
    def reads_input(self) -> bool:
        return self.kind != RouterKind.NONE

    def standardize_from(self, router_input: torch.Tensor) -> None:
        """Set the input standardisation from training features (n, input_dim)."""
        if self.reads_input:
            mean = router_input.mean(0)
            # two passes by hand, the second over blocks of rows: Tensor.std(0) reduces across rows ~2× slower on CPU,
            # and one (n, d) temporary for x − mean cost 0.22 s against 0.06 s in blocks (18,800 × 3,072)
            squares = torch.zeros_like(mean, dtype=torch.float64)
            for block in router_input.split(_STANDARDIZE_ROWS):
                deviation = block - mean
                if not torch.isfinite(deviation.abs().max().square() * block.shape[0]):  # beyond float32: sum wide
                    deviation = deviation.double()
                squares += deviation.pow_(2).sum(0)
            scale = squares.div_(max(1, router_input.shape[0] - 1)).sqrt_().to(mean.dtype)
            self.input_mean.copy_(mean)
            self.input_scale.copy_(scale.clamp_min(MIN_INPUT_SCALE))

    @property
    def input_inverse_scale(self) -> torch.Tensor:
        """(input_dim,) 1/s per router input column; 0 for a column (nearly) constant on the training data — sd at the
        1e-6 floor or below 1e-5 of its mean's size. Such a column carries nothing the router could learn from
        (standardised, it is 0 on every training pair), and folding its 1/s ≈ 1e6 into the first layer would only
        add cancellation error (real sentence embeddings have constant columns: 3 of MiniLM's 384 on HH prompts)."""
        informative = self.input_scale > torch.maximum(torch.full_like(self.input_scale, MIN_INPUT_SCALE),
                                                       1e-5 * self.input_mean.abs())
        return torch.where(informative, self.input_scale.reciprocal(), torch.zeros_like(self.input_scale))

    def standardize(self, router_input: torch.Tensor) -> torch.Tensor:
        """(n, input_dim) z = (x − m) / s as the router sees it (uninformative columns 0)."""
        return (router_input - self.input_mean) * self.input_inverse_scale

    def log_prior(self, scale: float) -> torch.Tensor:
        """Gaussian log-density (up to a constant) of the network weights: the MAP router's weight decay."""
        return -0.5 * sum(p.pow(2).sum() for p in self.net.parameters()) / scale**2

    def log_weights(self, router_input: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n, K) normalised log π.

        The standardisation is folded into the first layer: f((x − m)/s) = net[1:](x (W/s)ᵀ + b − (W/s) m) with 1/s
        from ``input_inverse_scale`` — the same function and the same gradients in W and b as ``net(standardize(x))``,
        without the two (n, d_r) passes that standardising x costs (a third of a stage-1 step at d_r = 3,072).
        A bf16/fp16 input is multiplied in its own precision."""
        if self.k == 1:
            return torch.zeros(n, 1)
        if not self.reads_input:
            return torch.log_softmax(self.logits, -1).expand(n, self.k)
        first, *rest = self.net  # not net[1:]: slicing re-parents Pyro sample sites (a latent output layer) under new names
        weight = first.weight * self.input_inverse_scale
        bias = first.bias - weight @ self.input_mean
        if router_input.dtype == weight.dtype:
            hidden = nn.functional.linear(router_input, weight, bias)
        else:
            hidden = nn.functional.linear(router_input, weight.to(router_input.dtype)).float() + bias
        for layer in rest:
            hidden = layer(hidden)
        return torch.log_softmax(hidden, -1)


class BTMixture(PyroModule):
    """P(chosen ≻ rejected | x) = Σ_k π_k(x) σ(w_kᵀ(h_w − h_l)); heads w ~ Normal(0, prior_scale).

    ``alpha`` adds the paper's regulariser α·H(π(x)) per pair as a factor (pushes π toward uniform).
    """

    def __init__(self, dim: int, k: int, router: RouterKind = "prompt", router_dim: int = 0, *, hidden: int = 128,
                 prior_scale: float = 1.0, alpha: float = 0.5, router_prior_scale: float = 0.3):
        super().__init__()
        self.router_prior_scale = router_prior_scale
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.dim, self.k, self.alpha = dim, k, alpha
        self.prior_scale = prior_scale
        self.router = Router(router, k, router_dim, hidden)
        self.heads = PyroSample(lambda self: dist.Normal(0.0, self.prior_scale).expand([self.k, self.dim]).to_event(2))

    def forward(self, diff: torch.Tensor, router_input: torch.Tensor | None = None,
                size: int | None = None, router_index: torch.Tensor | None = None) -> torch.Tensor:
        """diff: (B, d) chosen − rejected; router_input: (B, d_r), or (m, d_r) distinct rows with ``router_index``
        (B,) naming each pair's row; size: N pairs in the full data (for scaling)."""
        heads = self.heads  # read the global site before entering the data plate
        if self.router.reads_input:
            pyro.factor("router_prior", self.router.log_prior(self.router_prior_scale))
        n = diff.shape[0]
        with pyro.plate("pairs", size or n, subsample=torch.arange(n)):
            if router_index is None:
                log_w = self.router.log_weights(router_input, n)
            else:
                log_w = self.router.log_weights(router_input, router_input.shape[0])[router_index]
            log_lik = mixture_log_prob(log_w, reward_margins(heads, diff))
            pyro.factor("obs", log_lik)
            if self.alpha and self.k > 1:
                pyro.factor("router_entropy", self.alpha * entropy(log_w))
        return log_lik
