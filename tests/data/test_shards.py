"""Sharded memory-mapped store: round trip, manifest checksums, statistics, blocks, atomic writes, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.shards import ShardStore, load_shards, write_shards, write_synthetic_shards
from bayesmicro.errors import BadInput
from tests.common import assert_close, small_pairs


@pytest.mark.parametrize("with_context", [True, False], ids=["context", "no-context"])
def test_round_trip_keeps_every_row_in_fp16(tmp_path, with_context):
    pairs = small_pairs(n=50, d=6, d_p=4, d_c=3 if with_context else None, seed=1)
    store = write_shards(pairs, tmp_path / "store", rows_per_shard=7, shuffle_seed=None)
    assert len(store) == 50 and len(store.shards) == 8 and [s["rows"] for s in store.shards] == [7] * 7 + [1]
    back = load_shards(tmp_path / "store").to_pairs()
    assert back.chosen.dtype == torch.float16
    for key in ("chosen", "rejected", "prompt") + (("context",) if with_context else ()):
        assert torch.equal(getattr(back, key), getattr(pairs, key).half()), key
    assert (back.context is None) == (not with_context)


def test_shuffled_write_is_the_seeded_permutation(tmp_path):
    pairs = small_pairs(n=30, seed=2)
    store = write_shards(pairs, tmp_path / "s", rows_per_shard=8, shuffle_seed=5)
    order = np.random.default_rng(5).permutation(30)
    assert torch.equal(store.to_pairs().chosen, pairs.chosen[order].half())


def test_manifest_checksums_match_the_files_and_verify_catches_damage(tmp_path):
    store = write_shards(small_pairs(n=20), tmp_path / "s", rows_per_shard=6)
    for shard in store.shards:
        assert hashlib.sha256((tmp_path / "s" / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    store.verify()
    victim = tmp_path / "s" / store.shards[1]["file"]
    raw = bytearray(victim.read_bytes())
    raw[-3] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="shard-00001.safetensors.*sha256"):
        store.verify()


def test_statistics_equal_the_stored_values(tmp_path):
    pairs = small_pairs(n=64, d=5, d_p=3, d_c=2, seed=3)
    pairs.prompt = pairs.prompt * 4 + 2
    store = write_shards(pairs, tmp_path / "s", rows_per_shard=10)
    stats = store.stats()
    prompt, context = pairs.prompt.half().double(), pairs.context.half().double()
    assert_close(stats["prompt_mean"], prompt.mean(0), atol=1e-5)
    assert_close(stats["prompt_std"], prompt.std(0), atol=1e-5)
    assert_close(stats["context_std"], context.std(0), atol=1e-5)
    diff = pairs.chosen.half().double() - pairs.rejected.half().double()
    assert_close(stats["diff_rms"], diff.pow(2).sum(1).mean().sqrt(), atol=1e-5)


def test_blocks_cover_every_row_once_and_never_straddle_shards(tmp_path):
    store = write_shards(small_pairs(n=23), tmp_path / "s", rows_per_shard=10)
    blocks = store.blocks(4)
    assert all(b.stop - b.start <= 4 for b in blocks)
    rows = [(b.shard, r) for b in blocks for r in range(b.start, b.stop)]
    assert len(rows) == len(set(rows)) == 23
    assert all(b.stop <= store.shards[b.shard]["rows"] for b in blocks)
    got = torch.cat([store.read(b)["prompt"] for b in blocks])
    assert torch.equal(got, store.to_pairs().prompt)


def test_chunked_writer_matches_single_write(tmp_path):
    pairs = small_pairs(n=25, d_c=None, seed=4)
    chunks = [pairs.subset(np.arange(0, 9)), pairs.subset(np.arange(9, 25))]
    a = write_shards(chunks, tmp_path / "a", rows_per_shard=6)
    b = write_shards(pairs, tmp_path / "b", rows_per_shard=6, shuffle_seed=None)
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]


def test_bad_block_leaves_nothing_behind(tmp_path):
    good = small_pairs(n=10, d=4, d_c=None)
    bad = small_pairs(n=10, d=5, d_c=None)
    with pytest.raises(BadInput, match="'chosen' has 5 columns, earlier blocks had 4"):
        write_shards([good, bad], tmp_path / "s", rows_per_shard=4)
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_shard_and_foreign_manifest_are_bad_input(tmp_path):
    store = write_shards(small_pairs(n=12), tmp_path / "s", rows_per_shard=5)
    (tmp_path / "s" / store.shards[2]["file"]).unlink()
    with pytest.raises(BadInput, match="missing shard 'shard-00002.safetensors'"):
        ShardStore(tmp_path / "s")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BadInput, match="not a shard-store manifest"):
        ShardStore(tmp_path / "t")


def test_synthetic_store_labels_follow_the_generating_heads(tmp_path):
    store = write_synthetic_shards(tmp_path / "s", 3000, 8, 1, seed=0, rows_per_shard=1000, head_scale=3.0)
    assert len(store) == 3000 and store.dim == 8 and store.prompt_dim == 8 and len(store.shards) == 3
    heads = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)) * (3.0 / 8**0.5)
    pairs = store.to_pairs()
    agree = ((pairs.diff() @ heads.T).squeeze(1) > 0).float().mean()
    assert agree > 0.75  # a single true head: the chosen response wins under it far more often than not
