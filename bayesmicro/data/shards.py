"""Sharded, memory-mapped store of embedded pairs for data larger than memory.

A store is a folder::

    manifest.json            format, n, dim, prompt_dim, context_dim, dtype, shards [{file, rows, sha256}], meta
    stats.safetensors        float64 column sums for the router standardisation and the feature scale
    shard-00000.safetensors  chosen (r, d), rejected (r, d), prompt (r, d_p) [, context (r, d_c)] — fp16 by default

Shards are read with ``safetensors.safe_open`` (the file is memory-mapped; a slice copies only its rows), one block of
rows at a time, and closed again so that resident memory stays at one batch. Nothing ever holds the whole feature set
in memory, and the chosen − rejected difference is formed per batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from bayesmicro._io import atomic_dir, check_output, read_json, read_tensors, write_bytes_atomic, write_json, write_tensors
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput

SHARDS_FORMAT = "bayesmicro.shards/1"
MANIFEST_FILE, STATS_FILE = "manifest.json", "stats.safetensors"
SHARD_KEYS = ("chosen", "rejected", "prompt", "context")


class ShardWriter:
    """Append blocks of pairs; each full block of ``rows_per_shard`` rows becomes one shard file.

    Keeps float64 running sums for the statistics the streaming fit needs (prompt/context mean and sd, mean squared
    norm of chosen − rejected), so that no second pass over the data is needed.
    """

    def __init__(self, folder: Path, rows_per_shard: int, dtype: torch.dtype, has_context: bool):
        if rows_per_shard < 1:
            raise BadInput(f"rows_per_shard must be ≥ 1, got {rows_per_shard}")
        self.folder, self.rows_per_shard, self.dtype, self.has_context = folder, rows_per_shard, dtype, has_context
        self.shards: list[dict[str, Any]] = []
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.pending_rows = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0
        self.diff_sq = 0.0
        self.dims: dict[str, int] = {}

    def add(self, chosen: torch.Tensor, rejected: torch.Tensor, prompt: torch.Tensor,
            context: torch.Tensor | None = None) -> None:
        """Append rows: chosen, rejected (r, d); prompt (r, d_p); context (r, d_c) when the store has context."""
        block = {"chosen": chosen, "rejected": rejected, "prompt": prompt}
        if self.has_context:
            if context is None:
                raise BadInput("this store has a 'context' matrix; every block needs one")
            block["context"] = context
        for key, value in block.items():
            if value.ndim != 2 or value.shape[0] != chosen.shape[0]:
                raise BadInput(f"'{key}' has shape {tuple(value.shape)}, expected ({chosen.shape[0]}, ·)")
            if self.dims.setdefault(key, value.shape[1]) != value.shape[1]:
                raise BadInput(f"'{key}' has {value.shape[1]} columns, earlier blocks had {self.dims[key]}")
        stored = {key: value.to(self.dtype) for key, value in block.items()}
        # statistics of what is stored (the rounded values), so the fit sees exactly these numbers
        diff = stored["chosen"].float() - stored["rejected"].float()
        self.diff_sq += float(diff.pow_(2).sum(dtype=torch.float64))
        for key in ("prompt", "context"):
            if key in stored:
                x = stored[key].float()
                self.sums[f"{key}.sum"] = self.sums.get(f"{key}.sum", 0) + x.sum(0, dtype=torch.float64)
                self.sums[f"{key}.sumsq"] = self.sums.get(f"{key}.sumsq", 0) + x.pow_(2).sum(0, dtype=torch.float64)
        self.n += chosen.shape[0]
        start = 0
        while start < chosen.shape[0]:
            take = min(self.rows_per_shard - self.pending_rows, chosen.shape[0] - start)
            for key, value in stored.items():
                self.pending.setdefault(key, []).append(value[start:start + take])
            self.pending_rows += take
            start += take
            if self.pending_rows == self.rows_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        tensors = {key: torch.cat(parts).contiguous() for key, parts in self.pending.items()}
        data = safetensors_bytes(tensors)
        name = f"shard-{len(self.shards):05d}.safetensors"
        write_bytes_atomic(self.folder / name, data)
        self.shards.append({"file": name, "rows": self.pending_rows, "sha256": hashlib.sha256(data).hexdigest()})
        self.pending, self.pending_rows = {}, 0

    def close(self, meta: dict[str, Any]) -> None:
        self._flush()
        if self.n == 0:
            raise BadInput("no pairs to write (expected at least one row)")
        write_tensors(self.folder / STATS_FILE, {k: v for k, v in self.sums.items()})
        write_json(self.folder / MANIFEST_FILE, {
            "format": SHARDS_FORMAT, "n": self.n, "dim": self.dims["chosen"], "prompt_dim": self.dims["prompt"],
            "context_dim": self.dims.get("context", 0), "dtype": str(self.dtype).removeprefix("torch."),
            "diff_mean_sq_norm": self.diff_sq / self.n, "shards": self.shards, "meta": meta,
        })


def write_shards(blocks: Iterable[EmbeddedPairs] | EmbeddedPairs, path: str | os.PathLike, *,
                 rows_per_shard: int = 32_768, dtype: torch.dtype = torch.float16, shuffle_seed: int | None = 0,
                 meta: dict[str, Any] | None = None, overwrite: bool = False) -> "ShardStore":
    """Write pairs to a shard store at ``path`` (atomically: nothing is left half-written).

    ``blocks``: one ``EmbeddedPairs`` or an iterable of them (e.g. produced chunk by chunk, so the whole data never
    sits in memory). A single ``EmbeddedPairs`` is written in an order shuffled with ``shuffle_seed`` (None keeps it),
    because the streaming fit draws contiguous blocks of rows as minibatches. ``path`` must not exist, be empty, or
    (``overwrite``) be an earlier shard store holding only what bayesmicro wrote.
    """
    check_output(path, "shard_store", overwrite=overwrite)
    if isinstance(blocks, EmbeddedPairs):
        single = blocks
        if shuffle_seed is not None:
            single = single.subset(np.random.default_rng(shuffle_seed).permutation(len(single)))
        meta = {**single.meta, **(meta or {})}
        blocks = [single]
    with atomic_dir(path, "shard_store", overwrite=overwrite) as tmp:
        writer = None
        for block in blocks:
            if writer is None:
                writer = ShardWriter(tmp, rows_per_shard, dtype, block.context is not None)
            writer.add(block.chosen, block.rejected, block.prompt, block.context)
        if writer is None:
            raise BadInput("no pairs to write (expected at least one block)")
        writer.close(meta or {})
    return ShardStore(path)


@dataclass(frozen=True)
class Block:
    """Rows [start, stop) of shard ``shard``."""

    shard: int
    start: int
    stop: int


class ShardStore:
    """Read side of a shard store. Cheap to open (reads the manifest only); tensors are read per block."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest = read_json(self.path / MANIFEST_FILE)
        if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
            raise BadInput(f"'{MANIFEST_FILE}' is not a shard-store manifest ({SHARDS_FORMAT})", source=str(self.path))
        self.manifest = manifest
        self.n: int = manifest["n"]
        self.dim: int = manifest["dim"]
        self.prompt_dim: int = manifest["prompt_dim"]
        self.context_dim: int = manifest["context_dim"]
        self.shards: list[dict[str, Any]] = manifest["shards"]
        if sum(s["rows"] for s in self.shards) != self.n:
            raise BadInput(f"'{MANIFEST_FILE}' shard rows do not add up to n = {self.n}", source=str(self.path))
        for shard in self.shards:
            if not (self.path / shard["file"]).is_file():
                raise BadInput(f"missing shard '{shard['file']}' listed in '{MANIFEST_FILE}'", source=str(self.path))

    def __len__(self) -> int:
        return self.n

    @property
    def has_context(self) -> bool:
        return self.context_dim > 0

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    @property
    def nbytes(self) -> int:
        return sum((self.path / s["file"]).stat().st_size for s in self.shards)

    def verify(self) -> None:
        """Check every shard against the manifest's sha256 (reads all bytes once)."""
        for shard in self.shards:
            digest = hashlib.sha256()
            with open(self.path / shard["file"], "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(chunk)
            if digest.hexdigest() != shard["sha256"]:
                raise BadInput(f"shard '{shard['file']}' does not match its sha256 in '{MANIFEST_FILE}' "
                               "(the file changed or is damaged)", source=str(self.path))

    def stats(self) -> dict[str, torch.Tensor]:
        """Float32 ``{key}_mean``, ``{key}_std`` (key ∈ prompt, context) and ``diff_rms`` (scalar)."""
        sums = read_tensors(self.path / STATS_FILE)
        out = {"diff_rms": torch.tensor(self.manifest["diff_mean_sq_norm"]).sqrt().float()}
        for key in ("prompt", "context"):
            if f"{key}.sum" in sums:
                mean = sums[f"{key}.sum"] / self.n
                var = (sums[f"{key}.sumsq"] / self.n - mean.pow(2)) * self.n / max(1, self.n - 1)
                out[f"{key}_mean"], out[f"{key}_std"] = mean.float(), var.clamp_min(0).sqrt().float()
        return out

    def blocks(self, rows: int) -> list[Block]:
        """All blocks of at most ``rows`` rows, shard by shard (blocks never straddle shards)."""
        out = []
        for i, shard in enumerate(self.shards):
            out.extend(Block(i, s, min(s + rows, shard["rows"])) for s in range(0, shard["rows"], rows))
        return out

    def read(self, block: Block, keys: tuple[str, ...] = ("chosen", "rejected", "prompt")) -> dict[str, torch.Tensor]:
        """The rows of ``block`` as stored (fp16 by default), each (rows, ·). The shard is mapped only meanwhile."""
        with safe_open(str(self.path / self.shards[block.shard]["file"]), framework="pt") as f:
            return {key: f.get_slice(key)[block.start:block.stop] for key in keys}

    def iter_blocks(self, rows: int, keys: tuple[str, ...] = ("chosen", "rejected", "prompt")
                    ) -> Iterator[dict[str, torch.Tensor]]:
        for block in self.blocks(rows):
            yield self.read(block, keys)

    def to_pairs(self) -> EmbeddedPairs:
        """Everything in memory as ``EmbeddedPairs`` in the stored dtype (for small stores and tests)."""
        keys = ("chosen", "rejected", "prompt") + (("context",) if self.has_context else ())
        parts = list(self.iter_blocks(max(s["rows"] for s in self.shards), keys))
        return EmbeddedPairs(**{k: torch.cat([p[k] for p in parts]) for k in keys}, meta=self.meta,
                             source=str(self.path))


def load_shards(path: str | os.PathLike) -> ShardStore:
    """Open a shard store written by ``write_shards``."""
    return ShardStore(path)


def write_synthetic_shards(path: str | os.PathLike, pairs: int, dim: int, k: int, *, prompt_dim: int | None = None,
                           seed: int = 0, rows_per_shard: int = 32_768, dtype: torch.dtype = torch.float16,
                           head_scale: float = 3.0) -> ShardStore:
    """A synthetic store of ``pairs`` pairs drawn from a prompt-routed K-head BT mixture, generated shard by shard
    (memory stays at one shard). Features ~ N(0, 1); heads ~ N(0, head_scale²/dim); π(x) = softmax(Ax) for a random
    A; each pair's label is drawn from σ(w_zᵀ(h_w − h_l)) and the two responses swapped when it says so."""
    if pairs < 1 or dim < 1 or k < 1:
        raise BadInput(f"pairs, dim and k must be ≥ 1, got {pairs}, {dim}, {k}")
    prompt_dim = dim if prompt_dim is None else prompt_dim
    gen = torch.Generator().manual_seed(seed)
    heads = torch.randn(k, dim, generator=gen) * (head_scale / dim**0.5)
    gate = torch.randn(prompt_dim, k, generator=gen) * (2.0 / prompt_dim**0.5)

    def blocks() -> Iterator[EmbeddedPairs]:
        for start in range(0, pairs, rows_per_shard):
            rows = min(rows_per_shard, pairs - start)
            chosen = torch.randn(rows, dim, generator=gen)
            rejected = torch.randn(rows, dim, generator=gen)
            prompt = torch.randn(rows, prompt_dim, generator=gen)
            z = torch.multinomial(torch.softmax(prompt @ gate, -1), 1, generator=gen).squeeze(1)
            margin = ((chosen - rejected) * heads[z]).sum(1)
            swap = torch.rand(rows, generator=gen) > torch.sigmoid(margin)
            chosen[swap], rejected[swap] = rejected[swap], chosen[swap]
            yield EmbeddedPairs(chosen=chosen, rejected=rejected, prompt=prompt, source="<synthetic>")

    meta = {"synthetic": {"pairs": pairs, "dim": dim, "prompt_dim": prompt_dim, "k": k, "seed": seed,
                          "head_scale": head_scale}}
    return write_shards(blocks(), path, rows_per_shard=rows_per_shard, dtype=dtype, shuffle_seed=None, meta=meta)
