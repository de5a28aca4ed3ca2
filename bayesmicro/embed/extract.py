"""Fast extraction: length-sorted batches padded to their longest, inference mode, OOM back-off, progress,
and a deterministic batch plan so that a resumed or multi-process run computes every row in the same batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bayesmicro.embed import distributed
from bayesmicro.embed.cache import EmbeddingCache
from bayesmicro.embed.pooling import pool
from bayesmicro.embed.template import Text
from bayesmicro.errors import BadInput


@dataclass
class ExtractStats:
    texts: int = 0  # distinct texts requested
    cache_hits: int = 0  # of those, already in the cache
    computed: int = 0  # embedded by this run (all ranks)
    tokens: int = 0  # tokens run through the backbone by this run (all ranks, no padding)
    batch_size: int = 0  # final batch size (smaller than asked after an OOM back-off)
    extra: dict = field(default_factory=dict)


class Extractor:
    """A loaded backbone that turns token-id lists into pooled (b, d) float32 vectors."""

    def __init__(self, model, tokenizer, pooling: str, max_length: int, batch_size: int, device: torch.device):
        self.model, self.tokenizer, self.pooling = model, tokenizer, pooling
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.dim = int(model.config.hidden_size)

    def tokenize(self, texts: Sequence[Text]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length`` (the start is cut, so the last token survives)."""
        ids: list[list[int] | None] = [None] * len(texts)
        for special in (True, False):
            index = [i for i, t in enumerate(texts) if t.special == special]
            if index:
                encoded = self.tokenizer([texts[i].text for i in index], add_special_tokens=special, truncation=True,
                                         max_length=self.max_length)["input_ids"]
                for i, row in zip(index, encoded):
                    ids[i] = list(row)
        return ids  # type: ignore[return-value]

    @torch.inference_mode()
    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        batch = self.tokenizer.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.pooling).cpu()

    def embed(self, ids: list[list[int]]) -> torch.Tensor:
        """(b, d) float32 for a planned batch, run in chunks of the current batch size; halves it on OOM."""
        out, start = [], 0
        while start < len(ids):
            chunk = ids[start:start + self.batch_size]
            try:
                out.append(self._forward(chunk))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise BadInput(f"out of memory on a single text of {len(chunk[0])} tokens; lower --max-length")
                self.batch_size = max(1, min(self.batch_size, len(chunk)) // 2)
                continue
            start += len(chunk)
        return torch.cat(out)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


MAX_PADDING = 0.2  # at most this share of a batch's padded tokens is padding
CPU_BATCH_TOKENS = 1024  # padded tokens per CPU batch: larger activations fall out of cache (measured: 16 × 256
#                          tokens ran slower batched than one text at a time on a 1-thread CPU; 16 × 64 ran 1.5× faster)


def plan_batches(lengths: Sequence[int], keys: Sequence[str], batch_size: int,
                 max_padding: float | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Longest first (an OOM shows at once), ties by key: the same texts always give the same batches.

    A batch takes the next text only while at most ``max_padding`` of its padded tokens would be padding (padding is
    computed and thrown away) and, when ``max_tokens`` is given, while its padded size stays within it.
    """
    max_padding = MAX_PADDING if max_padding is None else max_padding
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < batch_size:
            longest = lengths[batch[0]]
            real = sum(lengths[j] for j in batch) + lengths[i]
            fits = max_tokens is None or longest * (len(batch) + 1) <= max_tokens
            if fits and real >= (1.0 - max_padding) * longest * (len(batch) + 1):
                batch.append(i)
                continue
        batches.append([i])
    return batches


class _Bar:
    """rich progress on stderr with pairs/s and tokens/s (rank 0 only)."""

    def __init__(self, enabled: bool, n_pairs: int, n_texts: int):
        self.enabled, self.n_pairs, self.n_texts = enabled, max(n_pairs, 1), max(n_texts, 1)
        self.start = time.perf_counter()

    def __enter__(self) -> "_Bar":
        if self.enabled:
            self.progress = Progress(TextColumn("embedding"), BarColumn(), TextColumn("{task.fields[rate]}"),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("embedding", total=self.n_pairs, rate="")
        return self

    def update(self, texts_done: int, tokens_done: int) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        pairs_done = self.n_pairs * texts_done / self.n_texts
        self.progress.update(self.task, completed=pairs_done,
                             rate=f"{pairs_done / elapsed:.1f} pairs/s · {tokens_done / elapsed:.0f} tokens/s")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


def extract(
    cache: EmbeddingCache,
    texts: Sequence[Text],
    keys: Sequence[str],
    load: Callable[[], Extractor],
    progress: bool = False,
    n_pairs: int = 0,
) -> ExtractStats:
    """Embed every text whose key is not in ``cache`` and store it there, one shard per planned batch.

    Distributed: every rank plans the same batches; rank r embeds batches r, r + W, …; rank 0 writes them to the
    cache in plan order, so the cache equals a one-process run's. All ranks return after the cache is complete.
    """
    unique: dict[str, Text] = {}
    for key, text in zip(keys, texts):
        unique.setdefault(key, text)
    stats = ExtractStats(texts=len(unique))
    rank, world = distributed.rank(), distributed.world_size()
    lock = cache.locked() if rank == 0 else _nullcontext()
    with lock:
        if rank == 0:
            cache.remove_stale_temp_files()
            cache.reload()
        distributed.barrier()
        if rank != 0:
            cache.reload()
        missing = [k for k in unique if k not in cache]
        stats.cache_hits = stats.texts - len(missing)
        if missing:
            extractor = load()
            ids = extractor.tokenize([unique[k] for k in missing])
            plan = plan_batches([len(x) for x in ids], missing, extractor.batch_size,
                                max_tokens=CPU_BATCH_TOKENS if extractor.device.type == "cpu" else None)
            capacity = extractor.batch_size
            with _Bar(progress and rank == 0, n_pairs, len(missing)) as bar:
                for first in range(0, len(plan), world):
                    mine = first + rank
                    rows = extractor.embed([ids[i] for i in plan[mine]]) if mine < len(plan) else None
                    blocks = distributed.gather_rows(rows, capacity, extractor.dim) if world > 1 else [rows]
                    for offset, block in enumerate(blocks):
                        number = first + offset
                        if number >= len(plan):
                            break
                        stats.computed += len(plan[number])
                        stats.tokens += sum(len(ids[i]) for i in plan[number])
                        if rank == 0 or cache.folder is None:
                            cache.put([missing[i] for i in plan[number]], block)
                    bar.update(stats.computed, stats.tokens)
            stats.batch_size = extractor.batch_size
        distributed.barrier()
    if rank != 0 and missing and cache.folder is not None:
        cache.reload()
    return stats


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
