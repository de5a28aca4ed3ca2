"""The ``embed`` job (``bayesmicro embed``, ``bayesmicro.run(EmbedConfig(...))``): text preference pairs → an
embedded-pairs folder (or a shard store) with a frozen backbone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bayesmicro.config import EmbedConfig
from bayesmicro.jobs._common import _threads, stderr


def run_embed(job: EmbedConfig) -> dict | None:
    """Embed ``job.data`` into ``job.out``; what was done (None on a torchrun rank other than 0)."""
    from bayesmicro._io import check_output
    from bayesmicro.embed import distributed
    from bayesmicro.embed.backbone import pick_device
    from bayesmicro.embed.pooling import check_pooling

    start = time.perf_counter()
    if job.pooling is not None:
        check_pooling(job.pooling)
    pick_device(job.device)
    # before any work: a refused or unwritable --out costs nothing
    check_output(Path(job.out), "shard_store" if job.shards else "embedded_pairs", overwrite=job.overwrite,
                 inputs=(job.data, job.cache_dir))
    import datasets
    import torch

    datasets.disable_progress_bars()  # one progress bar (ours) on stderr; errors stay one line
    if _threads["threads"] is not None:
        torch.set_num_threads(_threads["threads"])
    distributed.init_from_env(job.device)
    pairs = _load(job)
    embedder, pairs, extra, dim = _embed(job, pairs)
    stats, seconds = embedder.last_stats, time.perf_counter() - start
    result = {"pairs": len(pairs), "n": len(pairs), "tokens": stats["tokens"], "seconds": seconds,
              "embed_seconds": stats["seconds"], "pairs_per_second": len(pairs) / seconds,
              "cache_hits": stats["cache_hits"], "texts": stats["texts"], "computed": stats["computed"],
              "dim": dim, "device": stats["device"], "world_size": stats["world_size"],
              "batching": stats.get("batching"), "max_batch_tokens": stats.get("max_batch_tokens"),
              "out": job.out, "format": "shards" if job.shards else "embedded_pairs", **extra,
              "cache_dir": str(embedder.cache.folder), "embedding": embedder.settings()}
    if distributed.rank() != 0:
        return None
    kind = "" if not job.shards else (f" (a shard store; {extra['held_out_skipped']} held-out pairs left out)"
                                      if extra["held_out_skipped"] else " (a shard store)")
    stderr.print(f"embedded {result['pairs']} pairs ({result['texts']} distinct texts, {result['cache_hits']} from "
                 f"the cache, {result['tokens']} tokens) in {seconds:.1f}s → {job.out}{kind}")
    return result


def _load(job: EmbedConfig):
    from bayesmicro.data.pairs import PreferencePairs, load_pairs
    from bayesmicro.data.protocols import load_protocol
    from bayesmicro.data.protocols._common import limited

    if job.protocol is not None:
        return load_protocol(job.protocol, job.data, limit=job.limit)
    pairs = load_pairs(job.data)
    if job.limit is not None:
        pairs = PreferencePairs.from_dict(limited({c: pairs[c] for c in pairs.columns}, job.limit), pairs.source)
    return pairs


def _embed(job: EmbedConfig, pairs):
    """(the embedder, the pairs embedded, extra report keys, the embedding dim) after writing ``job.out``."""
    from bayesmicro.data.shards import write_shards
    from bayesmicro.embed import Embedder, distributed

    embedder = Embedder(model=job.model, pooling=job.pooling, max_length=job.max_length, batch_size=job.batch_size,
                        device=job.device, cache_dir=job.cache_dir, revision=job.revision,
                        max_batch_tokens=job.max_batch_tokens, batching=job.batching)
    source = {"source": job.data, "protocol": job.protocol, "limit": job.limit, "pairs": len(pairs)}
    extra, show = {}, sys.stderr.isatty()  # progress on stderr, also under --json; off when stderr is no terminal
    if job.shards:
        pairs, extra["held_out_skipped"] = _training_pairs(pairs)
        blocks = embedder.pair_blocks(pairs, progress=show)
        dim = (write_shards(blocks, Path(job.out), meta={"embedding": embedder.settings(), "data": source},
                            overwrite=job.overwrite).dim if distributed.rank() == 0 else None)
    else:
        embedded = embedder.embed_pairs(pairs, progress=show)
        embedded.meta["data"] = source
        if distributed.rank() == 0:
            embedded.save(Path(job.out), dtype=embedder.cache.dtype, overwrite=job.overwrite)
        dim = embedded.dim
    return embedder, pairs, extra, dim


def _training_pairs(pairs) -> tuple:
    """A shard store is fitted whole: keep the 'train' rows when the pairs carry a split; (pairs, rows left out)."""
    from bayesmicro.errors import BadInput

    if not pairs.has("split"):
        return pairs, 0
    keep = [i for i, part in enumerate(pairs["split"]) if part == "train"]
    if not keep:
        raise BadInput("--shards keeps the 'train' rows of a split column, and there are none", source=pairs.source)
    return pairs.select(keep), len(pairs) - len(keep)
