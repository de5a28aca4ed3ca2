"""``Fit``: the typed result of every inference method — draws of the heads, the router, a summary, save/load."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro._io import atomic_dir, read_json, read_tensors, write_json, write_tensors
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.base import Posterior
from bayesmicro.methods import Router as RouterKind
from bayesmicro.models.bt import mixture_log_prob, reward_margins
from bayesmicro.models.mixture import LABEL_ROUTERS, ROUTERS, BTMixture

RUN_FORMAT = "bayesmicro.run/1"
# router posteriors whose draws are evaluated on the router linearised at ``router_state`` (the MAP)
LINEARISED_POSTERIORS = ("linearised", "laplace")
CONFIG_FILE, PARAMS_FILE, SUMMARY_FILE = "config.json", "params.safetensors", "summary.json"
RESTARTS_DIR = "restarts"  # fit(keep_restarts=True): one run folder per restart's MAP, restarts/<r>/


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
    router_prior_scale: float = 0.3  # sd of the Gaussian prior on the router network's weights
    router_levels: tuple[str, ...] | None = None  # router "user" / "group": the labels its one-hot input codes

    @property
    def uses_context(self) -> bool:
        return self.router == RouterKind.CONTEXT

    @property
    def label_router(self) -> bool:
        return self.router in LABEL_ROUTERS

    def router_input(self, data: EmbeddedPairs, rows: np.ndarray | None = None) -> torch.Tensor | None:
        """(n, router_dim) what this model's router reads from ``data`` (of the pairs at ``rows``; None: all): the
        prompt embedding, [prompt; context], or the one-hot of the pair's label in ``router_levels`` (a label outside
        them: zeros); None for none."""
        if self.router == RouterKind.NONE or self.k == 1:
            return None
        if self.label_router:
            return data.label_onehot(self.router, self.router_levels, rows)  # no copy of the pairs, no re-validation
        return data.router_input(self.uses_context, rows)

    def build_model(self) -> BTMixture:
        return BTMixture(self.dim, self.k, self.router, self.router_dim, hidden=self.hidden,
                         prior_scale=self.prior_scale, alpha=self.alpha, router_prior_scale=self.router_prior_scale)


@dataclass(frozen=True)
class RewardSummary:
    """Posterior summaries of rewards r_k = w_kᵀh of n responses. ``quantile_levels``: (Q,).

    head_*: (n, K) per head ([Q, n, K] for quantiles); mixture_*: (n,) for Σ_k π_k(x) r_k ([Q, n]), None when the
    router needs an input that was not given. Heads of one fit share one labelling across draws (see ``Fit``).
    """

    quantile_levels: tuple[float, ...]
    head_mean: torch.Tensor
    head_sd: torch.Tensor
    head_quantiles: torch.Tensor
    mixture_mean: torch.Tensor | None
    mixture_sd: torch.Tensor | None
    mixture_quantiles: torch.Tensor | None


@dataclass(frozen=True)
class PreferenceProba:
    """Posterior of P(chosen ≻ rejected) for n pairs: mean, sd and the central ``level`` credible interval.

    ``risk_averse`` (= ``lower``) is the conservative score for best-of-n / RLHF: the pair is preferred with
    posterior probability ≥ (1 + level)/2 only above it."""

    level: float
    mean: torch.Tensor
    sd: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def risk_averse(self) -> torch.Tensor:
        return self.lower


@dataclass
class Fit(Posterior):
    """A fitted mixture. ``heads`` holds S draws (S = 1 for a point estimate) of shape (S, K, d).

    ``router_draws`` (vi/nuts on a routed mixture): S draws of router parameters {state key: (S, ...)} — the output
    layer (SVI, NUTS) or every layer (linearised VI or Laplace, NUTS with ``router_layers=(0, 2)``); ``router_state``
    then holds their mean (for the linearised posteriors: the MAP, see below). Draws are plugged into the router
    (``drawn_logits``), except draws of the linearised posteriors (``linearised_router``): their logits are
    f(x; θ̄) + J(x)(θ_s − θ̄) around θ̄ = ``router_state`` = the MAP (``linearised_logits``), the model those
    posteriors are built for (for the Laplace θ̄ is also their mean).
    Draws of one fit come from a unimodal posterior approximation started at the MAP, so they share one labelling;
    align across fits with ``evaluate.alignment``. ``restart_modes`` (``fit(keep_restarts=True)``): the one-draw MAP
    of every restart in order, the kept one included — candidates stage 2 can choose among (``routing.choose``).
    """

    config: FitConfig
    heads: torch.Tensor
    router_state: dict[str, torch.Tensor]
    summary: dict[str, Any] = field(default_factory=dict)
    router_draws: dict[str, torch.Tensor] = field(default_factory=dict)
    restart_modes: list["Fit"] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._router = self.config.build_model().router
        self._router.load_state_dict(self.router_state)
        self._router.eval()

    def mode_model(self) -> BTMixture:
        """A fresh ``BTMixture`` of this run's settings with its router at ``router_state`` (the MAP's for a MAP or
        linearised fit): the model a posterior or an evidence is computed around, together with ``heads``."""
        model = self.config.build_model()
        model.router.load_state_dict(self.router_state)
        return model

    def __repr__(self) -> str:  # the dataclass repr prints every tensor
        c = self.config
        trained = f", train_pairs={self.summary['train_pairs']}" if "train_pairs" in self.summary else ""
        return (f"Fit(k={c.k}, router={c.router!r}, inference={c.inference!r}, draws={self.n_draws}, dim={c.dim}, "
                f"router_dim={c.router_dim}, alpha={c.alpha}{trained})")

    # -- predictions --------------------------------------------------------------------------------------------
    def draws(self) -> dict[str, torch.Tensor]:
        """{"heads": (S, K, d), "router.<state key>": (S, ...) for each drawn router parameter}."""
        return {"heads": self.heads, **{f"router.{key}": value for key, value in self.router_draws.items()}}

    @property
    def n_draws(self) -> int:
        return self.heads.shape[0]

    def with_label_context(self, data: EmbeddedPairs) -> EmbeddedPairs:
        """For a run routed on a label (router "user" / "group") and pairs without a context matrix: the pairs
        with that label's one-hot in the run's coding as context (what stage-2 routing reads); else ``data``."""
        if not self.config.label_router or data.context is not None:
            return data
        return data.with_label_context(self.config.router, self.config.router_levels)

    def embedding_mismatch(self, data: EmbeddedPairs) -> str | None:
        """How ``data``'s embedding (backbone, revision, pooling, template, max length) differs from the one the run
        was fitted on, as a sentence; None when they agree or either is not recorded."""
        fitted = self.summary.get("embedding") if isinstance(self.summary, dict) else None
        given = data.meta.get("embedding") if isinstance(data.meta, dict) else None
        if not isinstance(fitted, dict) or not isinstance(given, dict):
            return None
        differ = [f"{key} {given.get(key)!r} (the run: {fitted.get(key)!r})" for key in
                  ("model", "revision", "pooling", "template", "max_length")
                  if key in fitted and key in given and fitted[key] != given[key]]
        if not differ:
            return None
        return (f"{data.source}: embedded with another {', '.join(differ)}: the run's heads score features of its own "
                "embedding; re-embed the pairs with the run's settings")

    def check_compatible(self, data: EmbeddedPairs) -> None:
        if self.config.label_router and getattr(data, self.config.router) is None:
            raise BadInput(f"the run routes on each pair's '{self.config.router}' label, and these pairs have none",
                           source=data.source)
        if data.dim != self.config.dim:
            raise BadInput(f"response features have {data.dim} columns, the run expects {self.config.dim}",
                           source=data.source)
        if self._router.reads_input and not self.config.label_router:
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
        return self._router.log_weights(self.router_input(data), len(data))

    def router_input(self, data: EmbeddedPairs) -> torch.Tensor | None:
        """(n, d_r) what the router reads from ``data`` (None for static weights), checked against the run."""
        self.check_compatible(data)
        return self.config.router_input(data)

    @torch.no_grad()
    def _log_weights_from(self, router_input: torch.Tensor | None, n: int) -> torch.Tensor:
        """(S_r, n, K) log π per router draw (S_r = 1 for a point-estimate router)."""
        router = self._router
        if not self.router_draws or not router.reads_input:
            return router.log_weights(None if router_input is None else router_input.float(), n).unsqueeze(0)
        z = router.standardize(router_input.float())
        per_draw = linearised_logits if self.linearised_router else drawn_logits
        return torch.log_softmax(per_draw(router.net, self.router_draws, z), dim=-1)

    @property
    def router_posterior(self) -> str | None:
        """The VI/EM run's router posterior (``summary[inference]["router_posterior"]``), else None."""
        info = self.summary.get(self.config.inference) if isinstance(self.summary, dict) else None
        return info.get("router_posterior") if isinstance(info, dict) else None

    @property
    def linearised_router(self) -> bool:
        """Whether router draws come from a linearised posterior (``router_posterior`` in ``LINEARISED_POSTERIORS``),
        and are therefore evaluated on the router linearised at ``router_state`` rather than plugged into it."""
        return self.router_posterior in LINEARISED_POSTERIORS

    @property
    def replayable_draws(self) -> bool:
        """Whether replaying the run with more draws (``infer.api.refit_like(draws=…)``) extends the same posterior's
        draws: the Gaussians around the MAP, and the refined VI (its chains run longer)."""
        return self.router_posterior in (*LINEARISED_POSTERIORS, "refined")

    @torch.no_grad()
    def log_weights_draws(self, data: EmbeddedPairs) -> torch.Tensor:
        """(S_r, n, K) log π(x) per router draw (S_r = S with a latent router output layer, else 1)."""
        return self._log_weights_from(self.router_input(data), len(data))

    @torch.no_grad()
    def margins(self, data: EmbeddedPairs) -> torch.Tensor:
        """(S, n, K) head margins Δ for every draw."""
        self.check_compatible(data)
        return reward_margins(self.heads, data.diff())

    @torch.no_grad()
    def pointwise_log_lik(self, data: EmbeddedPairs) -> torch.Tensor:
        """(S, n) log P(chosen ≻ rejected) for every draw."""
        return mixture_log_prob(self.log_weights_draws(data), self.margins(data))

    @torch.no_grad()
    def log_lik_from(self, diff: torch.Tensor, router_input: torch.Tensor | None) -> torch.Tensor:
        """``pointwise_log_lik`` on features already in hand: diff (n, d) chosen − rejected and the router input
        (n, d_r), None for a router that reads none. Returns (S, n)."""
        return mixture_log_prob(self._log_weights_from(router_input, diff.shape[0]), reward_margins(self.heads, diff))

    @torch.no_grad()
    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor:
        """(n,) posterior-mean P(chosen ≻ rejected) = mean over draws of Σ_k π_k σ(Δ_k)."""
        return self.pointwise_log_lik(data).exp().mean(0)

    @torch.no_grad()
    def reward(self, features: torch.Tensor, router_input: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the per-head rewards r_k = w_kᵀh: (n, K); with ``router_input`` the posterior mean of
        the mixture reward Σ_k π_k r_k over the joint draws of heads and router: (n,) — ``reward_summary``'s
        ``mixture_mean``, the definition ``score`` and the TRL adapter use."""
        rewards = features.float() @ self.heads.transpose(-1, -2)  # (S, n, K)
        if router_input is None:
            return rewards.mean(0)
        reads = router_input.float() if self._router.reads_input else None
        weights = self._log_weights_from(reads, rewards.shape[1]).exp()  # (S_r, n, K)
        return (weights * rewards).sum(-1).mean(0)

    @torch.no_grad()
    def prefer_proba(self, data: EmbeddedPairs, level: float = 0.9) -> PreferenceProba:
        """Posterior mean, sd and central ``level`` credible interval of P(chosen ≻ rejected), each (n,)."""
        if not 0.0 < level < 1.0:
            raise BadInput(f"level must be in (0, 1), got {level}")
        draws = self.pointwise_log_lik(data).exp().double()
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        lower, upper = torch.quantile(draws, q, dim=0)
        sd = draws.std(0) if draws.shape[0] > 1 else torch.zeros(draws.shape[1], dtype=torch.float64)
        return PreferenceProba(level, draws.mean(0), sd, lower, upper)

    @torch.no_grad()
    def reward_summary(self, features: torch.Tensor, router_input: torch.Tensor | None = None,
                       quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)) -> RewardSummary:
        """Posterior mean, sd and quantiles of each head's reward and of the mixture reward Σ_k π_k(x) r_k.

        features: (n, d) response features h(x, a); router_input: (n, d_r) raw router features (needed for the
        mixture reward when the router reads its input). Draws of the router output layer are used when present.
        """
        features = torch.as_tensor(features).float()
        if features.ndim != 2 or features.shape[1] != self.config.dim:
            raise BadInput(f"features must have shape (n, {self.config.dim}), got {tuple(features.shape)}")
        levels = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in levels):
            raise BadInput(f"quantiles must lie in [0, 1], got {levels}")
        q = torch.tensor(levels, dtype=torch.float64)
        rewards = (features @ self.heads.transpose(-1, -2)).double()  # (S, n, K)
        n = features.shape[0]

        def sd(x: torch.Tensor) -> torch.Tensor:
            return x.std(0) if x.shape[0] > 1 else torch.zeros_like(x[0])

        mixture = None
        if not self._router.reads_input or router_input is not None:
            if router_input is not None:
                router_input = torch.as_tensor(router_input).float()
                if router_input.shape != (n, self.config.router_dim):
                    raise BadInput(f"router_input must have shape ({n}, {self.config.router_dim}), "
                                   f"got {tuple(router_input.shape)}")
            weights = self._log_weights_from(router_input if self._router.reads_input else None, n).exp().double()
            mixture = (weights * rewards).sum(-1)  # (S, n)
        return RewardSummary(
            quantile_levels=levels, head_mean=rewards.mean(0), head_sd=sd(rewards),
            head_quantiles=torch.quantile(rewards, q, dim=0),
            mixture_mean=None if mixture is None else mixture.mean(0),
            mixture_sd=None if mixture is None else sd(mixture),
            mixture_quantiles=None if mixture is None else torch.quantile(mixture, q, dim=0),
        )

    @torch.no_grad()
    def risk_averse_reward(self, features: torch.Tensor, router_input: torch.Tensor | None = None,
                           quantile: float = 0.05) -> torch.Tensor:
        """(n,) lower posterior ``quantile`` of the mixture reward (per head (n, K) when the mixture needs a
        router input that was not given): a conservative reward for best-of-n selection / RLHF."""
        summary = self.reward_summary(features, router_input, (quantile,))
        return summary.head_quantiles[0] if summary.mixture_quantiles is None else summary.mixture_quantiles[0]

    # -- disk ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the run folder atomically (it appears complete or not at all). ``path`` must not exist, be empty,
        or (``overwrite``) be an earlier run folder holding only what bayesmicro wrote; anything else is refused."""
        with atomic_dir(path, "run", overwrite=overwrite) as tmp:
            self.write_into(tmp)
        return Path(path)

    def write_into(self, folder: Path) -> None:
        """Write config.json, params.safetensors and summary.json into an existing (temporary) folder."""
        tensors = {"heads": self.heads, **{f"router.{k}": v for k, v in self.router_state.items()},
                   **{f"router_draws.{k}": v for k, v in self.router_draws.items()}}
        write_tensors(folder / PARAMS_FILE, tensors)
        write_json(folder / CONFIG_FILE, {"format": RUN_FORMAT, **asdict(self.config)})
        write_json(folder / SUMMARY_FILE, self.summary)
        for r, mode in enumerate(self.restart_modes):
            (folder / RESTARTS_DIR / str(r)).mkdir(parents=True)
            mode.write_into(folder / RESTARTS_DIR / str(r))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fit":
        path = Path(path)
        if not path.is_dir():
            raise BadInput("not a run folder (expected the --out folder of `bayesmicro fit`)", source=str(path))
        raw = read_json(path / CONFIG_FILE)
        found = raw.pop("format", None) if isinstance(raw, dict) else None
        if found != RUN_FORMAT:
            from bayesmicro.infer.results.latent_class import LATENT_CLASS_FORMAT

            if found == LATENT_CLASS_FORMAT:
                raise BadInput("a per-user latent-class run (`fit --format comparisons`), not reward heads on "
                               "embedded pairs: load it with bayesmicro.load", source=str(path))
            raise BadInput(f"'{CONFIG_FILE}' is not a bayesmicro run config ({RUN_FORMAT})", source=str(path))
        if isinstance(raw.get("router_levels"), list):
            raw["router_levels"] = tuple(raw["router_levels"])
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
            if value.dtype != torch.float32:  # float64/float16/bfloat16 written by hand: computed in float32
                if bool((value.double().abs() > torch.finfo(torch.float32).max).any()):
                    raise BadInput(f"'{PARAMS_FILE}' tensor '{name}' ({value.dtype}) holds values beyond float32",
                                   source=str(path))
                tensors[name] = value.float()
        heads = tensors.pop("heads", None)
        if heads is None or heads.ndim != 3 or heads.shape[1:] != (config.k, config.dim):
            raise BadInput(f"'{PARAMS_FILE}' heads do not have shape (S, {config.k}, {config.dim})", source=str(path))
        router_state = {k.removeprefix("router."): v for k, v in tensors.items() if k.startswith("router.")}
        router_draws = {k.removeprefix("router_draws."): v for k, v in tensors.items()
                        if k.startswith("router_draws.")}
        if router_draws and any(v.shape[0] != heads.shape[0] for v in router_draws.values()):
            raise BadInput(f"'{PARAMS_FILE}' router draws do not match the {heads.shape[0]} head draws",
                           source=str(path))
        summary = read_json(path / SUMMARY_FILE)  # every saved run has one; its absence means a damaged folder
        if not isinstance(summary, dict):
            raise BadInput(f"'{SUMMARY_FILE}' holds a JSON {type(summary).__name__}, expected an object",
                           source=str(path))
        try:
            result = cls(config, heads, router_state, summary, router_draws)
        except RuntimeError as exc:  # state dict does not match the config
            raise BadInput(f"'{PARAMS_FILE}' does not match '{CONFIG_FILE}' ({str(exc).splitlines()[0]})",
                           source=str(path)) from None
        result.restart_modes = _load_restart_modes(path, config)
        return result


def _load_restart_modes(path: Path, config: FitConfig) -> list[Fit]:
    """The runs in ``path``/restarts/0, 1, … (none: []); each must be a one-draw run of ``config``."""
    folder = path / RESTARTS_DIR
    if not folder.is_dir():
        return []
    # hidden entries (.DS_Store, editor files) are not restarts
    names = sorted((p.name for p in folder.iterdir() if not p.name.startswith(".")),
                   key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name))
    if names != [str(r) for r in range(len(names))]:
        raise BadInput(f"'{RESTARTS_DIR}/' holds {names}, expected the folders 0 … {len(names) - 1}",
                       source=str(path))
    modes = [Fit.load(folder / name) for name in names]
    for name, mode in zip(names, modes):
        if mode.config != config or mode.n_draws != 1:
            raise BadInput(f"'{RESTARTS_DIR}/{name}' is not a one-draw run of this run's settings",
                           source=str(path))
    return modes


def drawn_logits(net: torch.nn.Module, draws: dict[str, torch.Tensor], z: torch.Tensor,
                 chunk_floats: int = 2_000_000) -> torch.Tensor:
    """(S, n, K) router logits f(z; θ_s) per draw. net, draws, z as in ``linearised_logits``."""
    from torch.func import functional_call, vmap

    center = {name: p.detach() for name, p in net.named_parameters()}
    s = next(iter(draws.values())).shape[0]
    params = {name: draws[f"net.{name}"] if f"net.{name}" in draws else value.expand(s, *value.shape)
              for name, value in center.items()}
    width = max(p.shape[0] for p in center.values())
    step = max(1, chunk_floats // max(1, z.shape[0] * width))
    return torch.cat([vmap(lambda p: functional_call(net, p, (z,)))({k: v[i:i + step] for k, v in params.items()})
                      for i in range(0, s, step)])


def linearised_logits(net: torch.nn.Module, draws: dict[str, torch.Tensor], z: torch.Tensor,
                      chunk_floats: int = 2_000_000) -> torch.Tensor:
    """(S, n, K) router logits per draw, linearised around ``net``'s parameters θ̄: f(z; θ̄) + J(z)(θ_s − θ̄).

    net: the router network; draws: {"net.<name>": (S, ...)} for some of its parameters (the others stay at θ̄);
    z: (n, d_r) standardised router input. Draws go in chunks of (chunk, n, hidden) ≈ ``chunk_floats``: measured
    2.8× faster than 10× larger chunks (4 000 draws × 1 500 pairs: 10 s vs 29 s), which thrash the allocator.
    """
    from torch.func import functional_call, jvp, vmap

    center = {name: p.detach() for name, p in net.named_parameters()}
    s = next(iter(draws.values())).shape[0]
    tangents = {name: draws[f"net.{name}"] - value if f"net.{name}" in draws else torch.zeros_like(value).expand(
        s, *value.shape) for name, value in center.items()}
    out = []
    width = max(p.shape[0] for p in center.values())
    step = max(1, chunk_floats // max(1, z.shape[0] * width))
    for start in range(0, s, step):
        chunk = {name: t[start:start + step] for name, t in tangents.items()}
        base, slope = vmap(lambda t: jvp(lambda p: functional_call(net, p, (z,)), (center,), (t,)))(chunk)
        out.append(base + slope)
    return torch.cat(out)


def _check_config_values(config: FitConfig, path: Path) -> None:
    """Types and ranges of a run config read from disk (a hand-edited file must fail here, not deep in torch)."""
    def bad(name: str, expected: str) -> BadInput:
        return BadInput(f"'{CONFIG_FILE}' field '{name}' is {getattr(config, name)!r}, expected {expected}",
                        source=str(path))

    for name, least in (("k", 1), ("dim", 1), ("hidden", 1), ("seed", 0), ("router_dim", 0)):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise bad(name, "a positive integer" if least else "an integer ≥ 0")
    for name in ("prior_scale", "alpha", "router_prior_scale"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise bad(name, "a finite number ≥ 0")
    if config.router not in ROUTERS:
        raise bad("router", f"one of {ROUTERS}")
    if not isinstance(config.inference, str):
        raise bad("inference", "a method name")
    levels = config.router_levels
    if config.label_router != (levels is not None) or (levels is not None and (
            not all(isinstance(v, str) for v in levels) or len(levels) != config.router_dim)):
        raise bad("router_levels", f"router_dim = {config.router_dim} label names for router 'user' / 'group', "
                                   "null for the other routers")
