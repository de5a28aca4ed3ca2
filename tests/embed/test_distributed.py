"""Two processes (torch.distributed, gloo on CPU) build the same cache as one process."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bayesmicro.embed import Embedder
from bayesmicro.embed import extract

PROMPTS = [f"Human: question number {i} " + "about things " * (i % 4) for i in range(7)]
RESPONSES = [f"answer {i} " + "because " * (i % 3) for i in range(7)]


def _small_blocks(module) -> None:
    """Blocks (cache shards, the unit a rank takes) of 2 texts: 7 texts make 4 blocks, 2 per rank."""
    module.BLOCK_TEXTS = module.MIN_BLOCK_TEXTS = 2


def _rank_main(rank: int, world: int, init_file: str, model: str, cache_dir: str) -> None:
    torch.set_num_threads(1)
    _small_blocks(extract)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        embedder = Embedder(model, batch_size=2, cache_dir=cache_dir)
        values = embedder.embed_responses(PROMPTS, RESPONSES)
        assert embedder.last_stats["world_size"] == world and embedder.last_stats["computed"] == len(PROMPTS)
        assert values.shape == (len(PROMPTS), 32)
    finally:
        dist.destroy_process_group()


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_two_process_cache_equals_one_process(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "BLOCK_TEXTS", 2)
    monkeypatch.setattr(extract, "MIN_BLOCK_TEXTS", 2)
    one = Embedder(tiny_model, batch_size=2, cache_dir=str(tmp_path / "one"))
    reference = one.embed_responses(PROMPTS, RESPONSES)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), tiny_model, str(tmp_path / "two")), nprocs=2, join=True)
    two = Embedder(tiny_model, batch_size=2, cache_dir=str(tmp_path / "two"))
    assert two.cache.folder.name == one.cache.folder.name
    files_one, files_two = _files(one.cache.folder), _files(two.cache.folder)
    assert len([f for f in files_one if f.startswith("shard-")]) == 4  # 7 texts in blocks of 2
    assert files_two == files_one  # byte-identical manifest and shards
    assert torch.equal(two.embed_responses(PROMPTS, RESPONSES), reference)
    assert two.last_stats["computed"] == 0
