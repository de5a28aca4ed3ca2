"""Rewards for TRL's online trainers (``GRPOTrainer(reward_funcs=...)``, RLOO, online DPO): a fitted mixture applied
to newly generated completions.

``reward = reward_function(run_dir, embedding=settings)`` returns a callable with TRL's ``reward_funcs`` signature
``(prompts, completions, **kwargs) -> list[float]``. For every completion it embeds (prompt, completion) with the
backbone, pooling and chat template the run was fitted on, weights the heads with the router,
π(x) = router(e(x)) (or with ``[e(x); context]`` for a context-routed run, reading ``kwargs["context"]``; a run
routed on labels reads ``kwargs["user"]`` or ``kwargs["group"]``), or with a
user's own weights when ``kwargs["user"]`` names a user in ``user_log_weights``, and returns per completion either the
posterior mean of Σ_k π_k w_kᵀh or its ``quantile``-th posterior quantile (risk-averse: e.g. 0.1). For a MAP run
(one draw) the quantile equals the mean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.methods import Router as RouterKind


def make_embedder(settings: Mapping[str, Any], device: str = "cpu", local_files_only: bool = False):
    """An embedder for ``settings`` (``EmbeddedPairs.meta["embedding"]``: model, revision, pooling, template,
    max_length): ``bayesmicro.embed.Embedder`` when available, else the stand-alone ``BackboneEmbedder``. The chat
    template must be the one the features were made with."""
    try:
        from bayesmicro.embed import Embedder  # type: ignore[attr-defined]
    except ImportError:
        Embedder = None
    if Embedder is not None:
        embedder = Embedder(model=settings["model"], pooling=settings.get("pooling"),
                            max_length=settings.get("max_length", 512), revision=settings.get("revision"),
                            device=device)
    else:
        from bayesmicro.integrations.backbone import BackboneEmbedder

        embedder = BackboneEmbedder(settings["model"], pooling=settings.get("pooling") or "last",
                                    max_length=settings.get("max_length", 512), revision=settings.get("revision"),
                                    device=device, local_files_only=local_files_only)
    expected, got = settings.get("template"), embedder.settings().get("template")
    if expected is not None and got != expected:
        raise BadInput(f"the backbone's chat template ({got}) is not the one the run's features used ({expected})",
                       source=str(settings["model"]))
    return embedder


class MixtureReward:
    """TRL ``reward_funcs`` callable: ``(prompts, completions, **kwargs) -> list[float]`` (see the module doc)."""

    def __init__(self, fit: Fit, embedder: Any, *, quantile: float | None = None,
                 user_log_weights: Mapping[str, torch.Tensor] | None = None, name: str = "bayesmicro_reward"):
        if quantile is not None and not 0.0 < quantile < 1.0:
            raise BadInput(f"quantile must be in (0, 1), got {quantile}")
        self.fit, self.embedder, self.quantile = fit, embedder, quantile
        self.user_log_weights = {str(u): torch.as_tensor(w, dtype=torch.float32).reshape(-1)
                                 for u, w in (user_log_weights or {}).items()}
        for user, w in self.user_log_weights.items():
            if w.shape != (fit.config.k,):
                raise BadInput(f"user {user!r}: log-weights have shape {tuple(w.shape)}, expected ({fit.config.k},)")
        self.__name__ = name  # TRL names reward columns after it

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise BadInput(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_text = [_as_text(p, "prompt") for p in prompts]
        completion_text = [_as_text(c, "completion") for c in completions]
        return self.rewards(prompt_text, completion_text, context=kwargs.get("context"),
                            user=kwargs.get("user"), group=kwargs.get("group")).tolist()

    @torch.no_grad()
    def draws(self, prompts: list[str], completions: list[str], context: Sequence[str] | None = None,
              user: Sequence[Any] | None = None, group: Sequence[Any] | None = None) -> torch.Tensor:
        """(S, n) mixture reward Σ_k π_k w_kᵀh(x, a) of every completion under every posterior draw."""
        n = len(prompts)
        features = self.embedder.embed_responses(prompts, completions).float()
        config = self.fit.config
        router_reads = RouterKind(config.router).reads_embedding
        prompt_x = self.embedder.embed_prompts(prompts).float() if router_reads else torch.zeros(n, 1)
        context_x = None
        if config.uses_context:
            if context is None:
                raise BadInput("this run routes on context: pass a 'context' column (one string per prompt)")
            context_x = _embed_texts(self.embedder, [str(c) for c in context]).float()
        labels = {}
        if config.label_router:
            given = user if config.router == RouterKind.USER else group
            if given is None:
                raise BadInput(f"this run routes on each prompt's {config.router}: pass a '{config.router}' column")
            labels[config.router] = np.asarray([str(v) for v in given])
        # rejected = 0: the "margin" of each head is then its reward w_kᵀh of the completion itself
        data = EmbeddedPairs(chosen=features, rejected=torch.zeros_like(features), prompt=prompt_x,
                             context=context_x, source="<completions>", **labels)
        log_w = self.fit.log_weights(data)
        if user is not None and self.user_log_weights:
            for i, u in enumerate(user):
                if str(u) in self.user_log_weights:
                    log_w[i] = torch.log_softmax(self.user_log_weights[str(u)], -1)
        rewards = self.fit.margins(data)  # (S, n, K)
        return (log_w.exp() * rewards).sum(-1)

    def rewards(self, prompts: list[str], completions: list[str], context: Sequence[str] | None = None,
                user: Sequence[Any] | None = None, group: Sequence[Any] | None = None) -> torch.Tensor:
        """(n,) posterior mean, or the ``quantile`` over draws, of each completion's mixture reward."""
        draws = self.draws(prompts, completions, context, user, group)
        if self.quantile is None:
            return draws.mean(0)
        return torch.quantile(draws, self.quantile, dim=0)


def reward_function(run_dir: str | os.PathLike, embedding: Mapping[str, Any] | None = None, *,
                    embedder: Any = None, quantile: float | None = None,
                    user_log_weights: Mapping[str, torch.Tensor] | None = None, device: str = "cpu",
                    local_files_only: bool = False) -> MixtureReward:
    """A TRL reward function from a run folder. ``embedding``: the settings the run's features were made with
    (``EmbeddedPairs.meta["embedding"]``); defaults to ``summary["embedding"]`` of the run. ``embedder``: use this
    object (``embed_responses`` / ``embed_prompts``) instead of building one."""
    fit = Fit.load(run_dir)
    if embedder is None:
        embedding = embedding or fit.summary.get("embedding")
        if not embedding:
            raise BadInput("the run does not record its embedding settings; pass embedding={model, pooling, "
                           "template, max_length} (EmbeddedPairs.meta['embedding'])", source=str(run_dir))
        embedder = make_embedder(embedding, device=device, local_files_only=local_files_only)
    return MixtureReward(fit, embedder, quantile=quantile, user_log_weights=user_log_weights)


def _as_text(item: Any, what: str) -> str:
    """TRL passes plain strings or conversations ([{role, content}, ...]); a conversation's prompt is its last user
    turn and a completion its assistant content."""
    if isinstance(item, str):
        return item
    if isinstance(item, Sequence) and item and all(isinstance(m, Mapping) and "content" in m for m in item):
        if what == "prompt":
            users = [m["content"] for m in item if m.get("role") == "user"]
            return str(users[-1] if users else item[-1]["content"])
        return "".join(str(m["content"]) for m in item if m.get("role", "assistant") == "assistant")
    raise BadInput(f"{what} is a {type(item).__name__}; expected a string or a list of {{role, content}} messages")


def _embed_texts(embedder: Any, texts: list[str]) -> torch.Tensor:
    if hasattr(embedder, "embed_texts"):
        return embedder.embed_texts(texts)
    from bayesmicro.embed.template import plain_text  # bayesmicro.embed's own rendering of free text

    return embedder._embed([plain_text(t) for t in texts], False, len(texts))
