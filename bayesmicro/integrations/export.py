"""Export a personalized reward as a standard scalar reward model: backbone + one linear score head.

The head is w = Σ_k π_k w̄_k (w̄_k the posterior-mean heads) for one fixed mixture: the router applied to a given
context, or the static weights. The result is a ``transformers`` folder that ``AutoModelForSequenceClassification``
loads and whose score of a (prompt, response), formatted as the run's features were (chat template, or
``prompt\n\nresponse`` without one), is wᵀh(x, a) — the same features the run was fitted on — so any RLHF stack
can use it without bayesmicro installed:

- features pooled on the last token (decoders): the backbone's own ``*ForSequenceClassification``, whose score
  head reads the last non-pad token;
- mean-pooled features (encoders such as the default all-MiniLM-L6-v2): ``MeanPooledRewardModel``, whose code the
  folder carries (``modeling`` file + ``auto_map``), loaded with ``trust_remote_code=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from bayesmicro._io import atomic_dir, check_output, write_json
from bayesmicro.embed.backbone import check_hub_id
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.integrations.mean_pooled_reward import MeanPooledRewardConfig, MeanPooledRewardModel
from bayesmicro.methods import Pooling, WeightMode
from bayesmicro.methods import Router as RouterKind

EXPORT_FILE = "bayesmicro_export.json"
PAD_TOKEN = "<|bayesmicro_pad|>"


def mixture_weights(fit: Fit, embedder: Any = None, context: str | None = None, prompt: str = "") -> torch.Tensor:
    """(K,) π for the export. ``context`` None: the static weights (router ``none``: its learned weights; a routed
    run: the router at the mean training input). Otherwise the router on e(context) (prompt router; the context is
    the prompt, e.g. a system prompt or user criterion), on [e(prompt); c(context)] (context router), or on the
    one-hot of the label ``context`` names (``user`` / ``group`` router)."""
    router = fit.config.build_model().router
    router.load_state_dict(fit.router_state)
    router.eval()
    with torch.no_grad():
        if not router.reads_input:
            return router.log_weights(None, 1)[0].exp()
        if context is None:
            return router.log_weights(router.input_mean[None], 1)[0].exp()
        if fit.config.label_router:
            levels = fit.config.router_levels
            if context not in levels:
                raise BadInput(f"--context {context!r} is not one of the {len(levels)} {fit.config.router} labels "
                               f"the run was fitted on (e.g. {', '.join(map(repr, levels[:3]))})")
            x = torch.nn.functional.one_hot(torch.tensor(levels.index(context)), len(levels))[None].float()
        elif fit.config.uses_context:
            x = torch.cat([embedder.embed_prompts([prompt]), embedder.embed_texts([context])], dim=1)
        else:
            x = embedder.embed_prompts([context])
        return router.log_weights(x.float(), 1)[0].exp()


def recorded_backbone(fit: Fit, run_dir, revision: str | None) -> tuple[str, str | None]:
    """(where to load the backbone the run's features came from, its hub revision) from the run's summary."""
    from bayesmicro.embed.backbone import DEFAULT_MODEL, default_model_path

    settings = fit.summary.get("embedding") or {}
    if not settings.get("model"):
        raise BadInput("the run does not record the backbone its features came from (they were not made by "
                       "`bayesmicro embed`): give --backbone", source=str(run_dir))
    model, recorded = settings["model"], settings.get("revision")
    if model == DEFAULT_MODEL:
        return default_model_path(), revision
    hub_revision = recorded if recorded and not str(recorded).startswith("sha256:") else None  # folders: a hash
    return model, revision or hub_revision


def export_reward_model(run_dir: str | os.PathLike, backbone: str | None, out: str | os.PathLike, *,
                        context: str | None = None, weights: str | None = None, prompt: str = "",
                        revision: str | None = None, local_files_only: bool = False,
                        overwrite: bool = False) -> dict[str, Any]:
    """Write ``out``: a sequence-classification model (``num_labels=1``) = ``backbone`` + score head Σ_k π_k w̄_k,
    pooled as the run's features were (``last``: the backbone's own ``*ForSequenceClassification``; ``mean``:
    ``MeanPooledRewardModel``, loaded with ``trust_remote_code=True``). Exactly one of ``context`` (text) and
    ``weights='static'``; ``backbone`` None: the one the run's features record (``bayesmicro embed`` writes it).
    Returns a JSON-able description. ``out`` must not exist, be empty, or (``overwrite``) be an earlier export
    holding only what bayesmicro wrote."""
    check_output(out, "export", overwrite=overwrite, inputs=(run_dir, backbone))
    if (context is None) == (weights is None):
        raise BadInput("give exactly one of --context TEXT and --weights static")
    if weights is not None and weights != WeightMode.STATIC:
        raise BadInput(f"--weights must be 'static', got {weights!r}")
    fit = Fit.load(run_dir)
    if backbone is None:
        backbone, revision = recorded_backbone(fit, run_dir, revision)
    settings = {"pooling": Pooling.LAST, "max_length": 512, **(fit.summary.get("embedding") or {}),
                "model": backbone, "revision": revision}
    check_hub_id(backbone)
    kwargs = {"revision": revision, "local_files_only": local_files_only}
    tokenizer, model, score = SCORE_MODELS[Pooling(settings["pooling"])](backbone, kwargs)
    if score.in_features != fit.config.dim:
        raise BadInput(f"the backbone's hidden size is {score.in_features}, the run's features have "
                       f"{fit.config.dim} columns (a different backbone?)", source=backbone)

    embedder = None
    if context is not None and RouterKind(fit.config.router).reads_embedding:
        from bayesmicro.integrations.trl import make_embedder

        embedder = make_embedder(settings, local_files_only=local_files_only)
    pi = mixture_weights(fit, embedder, context, prompt)
    head = pi @ fit.heads.mean(0)  # (d,) = Σ_k π_k w̄_k
    with torch.no_grad():
        score.weight.copy_(head[None].to(score.weight.dtype))
    _tokenize_as_the_run(tokenizer, model, settings)
    description = {"run": str(Path(run_dir)), "backbone": backbone, "context": context, "prompt": prompt,
                   "weights": weights or "context", "router": fit.config.router, "k": fit.config.k,
                   "mixture_weights": pi.tolist(), "architecture": type(model).__name__,
                   "pooling": str(settings["pooling"]), "trust_remote_code": isinstance(model, MeanPooledRewardModel),
                   "head_norm": float(head.norm())}
    with atomic_dir(out, "export", overwrite=overwrite, inputs=(run_dir, backbone)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / EXPORT_FILE, description)
    return {**description, "out": str(Path(out))}


def _load_failed(exc: Exception, backbone: str, what: str) -> BadInput:
    return BadInput(f"cannot load the backbone as {what} ({str(exc).splitlines()[0]})", source=backbone)


def last_token_model(backbone: str, kwargs: dict[str, Any]):
    """(tokenizer, the backbone's ``*ForSequenceClassification``, its score layer): scores the last non-pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(backbone, **kwargs)
        model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1, dtype=torch.float32,
                                                                   **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_failed(exc, backbone, "a sequence classifier") from None
    score = getattr(model, "score", None)
    if not isinstance(score, torch.nn.Linear) or score.bias is not None:
        raise BadInput(f"{type(model).__name__} has no bias-free linear 'score' head on the last token; a run with "
                       "'last' pooling exports with a decoder backbone such as Llama, Mistral, Qwen2 or Gemma",
                       source=backbone)
    return tokenizer, model, score


def mean_pooled_model(backbone: str, kwargs: dict[str, Any]):
    """(tokenizer, ``MeanPooledRewardModel`` holding the backbone's weights, its score layer): scores the mean of
    the last hidden states over the non-pad tokens."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(backbone, **kwargs)
        encoder = AutoModel.from_pretrained(backbone, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_failed(exc, backbone, "an encoder") from None
    MeanPooledRewardConfig.register_for_auto_class()
    MeanPooledRewardModel.register_for_auto_class("AutoModelForSequenceClassification")
    model = MeanPooledRewardModel(MeanPooledRewardConfig(backbone=encoder.config.to_dict()))
    model.backbone.load_state_dict(encoder.state_dict())
    return tokenizer, model.eval(), model.score


SCORE_MODELS = {Pooling.LAST: last_token_model, Pooling.MEAN: mean_pooled_model}  # the run's pooling → its head


def _tokenize_as_the_run(tokenizer, model, settings: dict[str, Any]) -> None:
    """The saved tokenizer cuts long texts as the embedding did (the start, at ``max_length``) and pads with a
    token of its own, so the exported score of a text equals the run's reward."""
    tokenizer.truncation_side = "left"
    tokenizer.model_max_length = int(settings["max_length"])
    if tokenizer.pad_token is None:  # the last-token head scores the last non-pad token: padding needs its own id
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
