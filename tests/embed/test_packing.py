"""Sequence packing: packed (block-diagonal mask), varlen (kernel split by cumulative lengths) and padded batches give
the same features, in fp32 on CPU; a cache written before packing existed stays valid and agrees with new rows."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer

from bayesmicro.embed import Embedder
from bayesmicro.embed import extract
from bayesmicro.embed.cache import settings_digest, text_key
from bayesmicro.embed.extract import (Extractor, collate, pack_rows, plan_blocks, plan_packed, plan_varlen,
                                      reference_varlen_kernel)
from bayesmicro.embed.template import pair_text, plain_text, prompt_text
from bayesmicro.errors import BadInput
from tests.common import assert_close

DATA = Path(__file__).parent / "data"
WORDS = "the a of to and in is it that for on with as you this be are or by not what how can".split()


def _texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [f"Human: {text(1, 40)}" for _ in range(n)], [text(1, 60) for _ in range(n)]


def _lengths_and_keys(n: int, seed: int) -> tuple[list[int], list[str]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 300, (n,), generator=g).tolist(), [f"k{i:04d}" for i in range(n)]


@pytest.mark.parametrize("row_tokens", [64, 300, 1024])
def test_rows_hold_every_sequence_once_within_the_row_length(row_tokens):
    lengths, keys = _lengths_and_keys(200, row_tokens)
    rows = pack_rows(lengths, keys, row_tokens)
    assert sorted(i for r in rows for i in r) == list(range(200))
    for row in rows:
        assert len(row) == 1 or sum(lengths[i] for i in row) <= row_tokens
    assert pack_rows(lengths, keys, row_tokens) == rows  # deterministic
    # greedy filling leaves little room: no row could take the shortest sequence of a later row
    used = [sum(lengths[i] for i in r) for r in rows]
    shortest_after = [min(lengths[i] for r in rows[k + 1:] for i in r) if k + 1 < len(rows) else 10**9
                      for k in range(len(rows))]
    assert all(row_tokens - u < s for u, s in zip(used, shortest_after))
    capped = pack_rows(lengths, keys, row_tokens, row_texts=2)
    assert max(len(r) for r in capped) <= 2 and sorted(i for r in capped for i in r) == list(range(200))


def test_packed_and_varlen_batches_respect_the_token_budget():
    lengths, keys = _lengths_and_keys(300, 1)
    for budget in (300, 1024, 4096):
        batches = plan_packed(lengths, keys, budget, min(256, budget), None)
        assert sorted(i for b in batches for r in b for i in r) == list(range(300))
        for rows in batches:
            fills = [sum(lengths[i] for i in r) for r in rows]
            assert len(rows) == 1 or max(fills) * len(rows) <= budget
            assert sum(fills) >= 0.8 * max(fills) * len(rows) - 1e-9  # at most 20 % row-end padding
        flat = plan_varlen(lengths, keys, budget, None)
        assert sorted(i for b in flat for i in b) == list(range(300))
        assert all(len(b) == 1 or sum(lengths[i] for i in b) <= budget for b in flat)
        assert all(len(b) <= 7 for b in plan_varlen(lengths, keys, budget, 7))


def test_blocks_are_longest_first_and_sized_by_the_job(monkeypatch):
    texts = [plain_text("x" * (i % 17)) for i in range(1000)]
    keys = [f"{i:04d}" for i in range(1000)]
    blocks = plan_blocks(texts, keys)
    assert [len(b) for b in blocks] == [256, 256, 256, 232]  # at least MIN_BLOCK_TEXTS per block
    flat = [i for b in blocks for i in b]
    assert flat == sorted(range(1000), key=lambda i: (-(i % 17), keys[i]))
    monkeypatch.setattr(extract, "MIN_BLOCK_TEXTS", 10)
    assert len(plan_blocks(texts, keys)) == extract.MIN_BLOCKS  # small blocks: 8 of them (several GPUs share)


def test_collate_lays_out_positions_segments_and_last_tokens():
    ids = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    batch = collate(ids, [[0, 1], [2]], [4, 5, 6], "packed", pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.segment.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3] and batch.attention_mask is None
    assert batch.last.tolist() == [2, 4, 8] and batch.dest.tolist() == [4, 5, 6] and batch.tokens == 9
    flat = collate(ids, [[0, 1, 2]], [0, 1, 2], "varlen", pad_id=0)
    assert flat.cu_seqlens.tolist() == [0, 3, 5, 9] and flat.max_seqlen == 4 and flat.input_ids.shape == (1, 9)
    padded = collate(ids, [[0], [1], [2]], [0, 1, 2], "padded", pad_id=0)
    assert padded.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert padded.position_ids is None and padded.last.tolist() == [2, 5, 11]


def _extractor(model_dir: str, mode: str, pooling: str = "last") -> Extractor:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    return Extractor(model, tokenizer.pad_token_id, pooling, 256, torch.device("cpu"), max_batch_tokens=256,
                     mode=mode)


def _pooled(extractor: Extractor, ids: list[list[int]]) -> torch.Tensor:
    buffer = torch.zeros(len(ids), extractor.dim)
    for batch in extractor.batches(ids, [f"{i:04d}" for i in range(len(ids))], list(range(len(ids)))):
        extractor.run(batch, buffer)
    return buffer


@pytest.fixture()
def reference_varlen(monkeypatch):
    """The varlen mode on CPU: the transformers attention hook with a per-sequence sdpa kernel in place of the
    CUDA flash kernel (what is tested is the packing, the hook and the cumulative lengths)."""
    monkeypatch.setattr(extract, "VARLEN_KERNEL", reference_varlen_kernel)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_packed_varlen_and_padded_equal_one_text_at_a_time_in_fp32(tiny_model, pooling, reference_varlen):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    prompts, responses = _texts(40)
    texts = [pair_text(tokenizer, p, a) for p, a in zip(prompts, responses)]
    ids = extract.tokenize(tokenizer, texts, 256)
    extractors = {mode: _extractor(tiny_model, mode, pooling) for mode in ("padded", "packed", "varlen")}
    assert {m: e.mode for m, e in extractors.items()} == {"padded": "padded", "packed": "packed", "varlen": "varlen"}
    model = extractors["padded"].model
    with torch.inference_mode():
        alone = []
        for x in ids:
            hidden = model(input_ids=torch.tensor([x])).last_hidden_state[0]
            alone.append(hidden[-1] if pooling == "last" else hidden.mean(0))
        alone = torch.stack(alone)
    for mode, extractor in extractors.items():
        batches = extractor.batches(ids, [f"{i:04d}" for i in range(len(ids))], list(range(len(ids))))
        if mode != "padded":  # several sequences share a row: the packing is real
            assert max(len(b.ids) for b in batches) > 4 and batches[0].input_ids.shape[0] < len(batches[0].ids)
        assert_close(_pooled(extractor, ids), alone, atol=1e-5, rtol=1e-5, msg=mode)


def test_packing_without_a_block_mask_would_leak_and_is_detected(tiny_model):
    """The agreement above is not vacuous: the same packed rows with one plain causal mask per row (what a model
    that ignores packed position ids computes) change the features."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    extractor = _extractor(tiny_model, "packed")
    ids = extract.tokenize(tokenizer, [plain_text("the a of to and in " * 3), plain_text("what how can")], 256)
    batch = collate(ids, [[0, 1]], [0, 1], "packed", extractor.pad_id)
    good = extractor.forward(batch)
    with torch.inference_mode():
        hidden = extractor.model(input_ids=batch.input_ids,
                                 attention_mask=torch.ones_like(batch.input_ids)).last_hidden_state
    leaked = hidden.reshape(-1, hidden.shape[-1])[batch.last]
    assert_close(leaked[0], good[0], atol=1e-5, rtol=1e-5)  # the first sequence sees nothing else either way
    assert (leaked[1] - good[1]).abs().max() > 1e-2  # the second one attends to the first without the block mask


def test_auto_packs_decoders_and_encoders_that_pass_the_probe(tiny_model, tmp_path):
    decoder = Embedder(tiny_model, cache_dir=str(tmp_path), device="cpu")
    decoder.embed_responses(["Human: hi"], ["hello"])
    assert decoder.last_stats["batching"] == "packed" and decoder.last_stats["max_batch_tokens"] == 1024
    # all-MiniLM-L6-v2 (BERT): transformers builds a block-diagonal bidirectional mask from packed position ids
    prompts, responses = _texts(12, seed=5)
    values = {}
    for mode in ("auto", "padded"):
        encoder = Embedder(cache_dir=str(tmp_path / mode), device="cpu", batching=mode, storage_dtype="float32")
        values[mode] = encoder.embed_responses(prompts, responses)
        assert encoder.last_stats["batching"] == ("packed" if mode == "auto" else "padded")
    assert_close(values["auto"], values["padded"], atol=1e-5, rtol=1e-5)


def test_a_model_that_ignores_packed_positions_falls_back_to_padding(tiny_model, tmp_path, monkeypatch):
    real = Extractor._hidden

    def no_positions(self, batch):  # a model that takes no position ids: packed rows would leak across sequences
        batch.position_ids = None
        return real(self, batch)

    monkeypatch.setattr(Extractor, "_hidden", no_positions)
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path / "a"), device="cpu")
    values = embedder.embed_responses(["Human: hi", "Human: something longer to say"], ["hello", "ok then"])
    assert embedder.last_stats["batching"] == "padded"
    monkeypatch.setattr(Extractor, "_hidden", real)
    reference = Embedder(tiny_model, cache_dir=str(tmp_path / "b"), device="cpu", batching="padded")
    assert torch.equal(values, reference.embed_responses(["Human: hi", "Human: something longer to say"],
                                                         ["hello", "ok then"]))
    monkeypatch.setattr(Extractor, "_hidden", no_positions)
    with pytest.raises(BadInput, match="--batching packed"):
        Embedder(tiny_model, cache_dir=str(tmp_path / "c"), device="cpu", batching="packed").embed_responses(
            ["q"], ["a"])
    with pytest.raises(BadInput, match="--batching"):
        Embedder(tiny_model, cache_dir=str(tmp_path), batching="ragged")


def test_embedder_caches_agree_across_batchings(tiny_model, tmp_path, reference_varlen, monkeypatch):
    monkeypatch.setattr(extract, "MIN_BLOCK_TEXTS", 16)  # 60 texts per call: 4 blocks of 16 (the last 12)
    prompts, responses = _texts(60, seed=3)
    values = {}
    for mode in ("padded", "packed", "varlen"):
        embedder = Embedder(tiny_model, cache_dir=str(tmp_path / mode), device="cpu", batching=mode,
                            storage_dtype="float32", max_batch_tokens=300)
        values[mode] = torch.cat([embedder.embed_responses(prompts, responses), embedder.embed_prompts(prompts)])
        assert embedder.last_stats["batching"] == mode
        assert len(list(embedder.cache.folder.glob("shard-*.safetensors"))) == 4 + 4
    assert_close(values["packed"], values["padded"], atol=1e-5, rtol=1e-5)
    assert_close(values["varlen"], values["padded"], atol=1e-5, rtol=1e-5)


def _fixture() -> dict:
    return json.loads((DATA / "cache_v1.json").read_text())


def _weights_sha256(folder: str) -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cache_v1", DATA / "make_cache_v1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.weights_checksum(Path(folder))


def _stored(folder: Path) -> dict[str, torch.Tensor]:
    rows = {}
    for shard in sorted(folder.glob("shard-*.safetensors")):
        with safe_open(str(shard), framework="pt") as fh:
            keys, values = json.loads(fh.metadata()["keys"]), fh.get_tensor("embeddings")
        rows.update(zip(keys, values))
    return rows


def test_a_cache_written_before_packing_is_read_and_matches_new_rows(tiny_model, tmp_path):
    fixture = _fixture()
    # the tiny model is rebuilt from a seed: same weights as when the fixture was written, else nothing below means
    assert _weights_sha256(tiny_model) == fixture["weights_sha256"], "tests/embed/tiny.py builds another model now"
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path / "old"), device="cpu")
    settings = embedder.settings()
    assert set(settings) == {"model", "revision", "pooling", "template", "max_length"}  # no new cache settings
    assert {k: v for k, v in settings.items() if k not in ("model", "revision")} == fixture["settings"]
    old_manifest = json.loads((DATA / "cache_v1" / "manifest.json").read_text())
    assert settings_digest(old_manifest["settings"]) == fixture["folder"]  # the folder name is the same digest
    # drop the old files into the folder this embedder reads (only the model path differs from the old machine)
    shutil.copytree(DATA / "cache_v1", embedder.cache.folder, dirs_exist_ok=True)
    embedder.cache.reload()
    prompts, responses = fixture["prompts"], fixture["responses"]
    old = _stored(DATA / "cache_v1")
    texts = ([pair_text(embedder.tokenizer, p, a) for p, a in zip(prompts, responses)]
             + [prompt_text(embedder.tokenizer, p) for p in prompts])
    assert set(old) == {text_key(t.text, t.special) for t in texts}
    read = torch.cat([embedder.embed_responses(prompts, responses), embedder.embed_prompts(prompts)])
    assert embedder.last_stats["computed"] == 0 and embedder._extractor is None  # all hits, model never loaded
    expected = torch.stack([old[text_key(t.text, t.special)] for t in texts]).float()
    assert torch.equal(read, expected)
    # the new extraction (packed on CPU) writes the same values, to fp16 rounding, as the old padded batches did
    fresh = Embedder(tiny_model, cache_dir=str(tmp_path / "new"), device="cpu")
    new = torch.cat([fresh.embed_responses(prompts, responses), fresh.embed_prompts(prompts)])
    assert fresh.last_stats["batching"] == "packed" and fresh.last_stats["computed"] == len(prompts)
    assert_close(new, expected, atol=1e-4, rtol=2 ** -10)  # at most one fp16 step apart
    # a half-old cache: new rows are added next to the old ones, old rows are kept as they are
    mixed = Embedder(tiny_model, cache_dir=str(tmp_path / "old"), device="cpu")
    extra_prompts, extra_responses = _texts(6, seed=9)
    mixed.embed_responses(prompts + extra_prompts, responses + extra_responses)
    assert mixed.last_stats["cache_hits"] == len(prompts) and mixed.last_stats["computed"] == 6
    assert torch.equal(mixed.embed_responses(prompts, responses), read[:len(prompts)])


def test_a_failing_tokenizer_stops_the_run_instead_of_hanging(tiny_model, tmp_path, monkeypatch):
    def broken(tokenizer, texts, max_length):
        raise ValueError("tokenizer exploded")

    monkeypatch.setattr("bayesmicro.embed.embedder.tokenize", broken)
    with pytest.raises(ValueError, match="tokenizer exploded"):
        Embedder(tiny_model, cache_dir=str(tmp_path), device="cpu").embed_responses(["q"], ["a"])


def test_a_batch_moves_every_tensor_to_the_device():
    batch = collate([[5, 6, 7], [8, 9]], [[0, 1]], [3, 4], "varlen", pad_id=0)
    moved = batch.to(torch.device("meta"))  # stands in for CUDA: every tensor field must travel
    tensors = ("dest", "input_ids", "position_ids", "last", "segment", "lengths", "cu_seqlens")
    assert all(getattr(moved, name).device.type == "meta" for name in tensors) and moved.attention_mask is None
    assert (moved.ids, moved.max_seqlen, moved.tokens) == (batch.ids, 3, 5)
    assert batch.to(torch.device("cpu")) is batch


def test_default_token_budget_follows_free_memory(monkeypatch):
    from types import SimpleNamespace

    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    model.config = SimpleNamespace(hidden_size=2048, intermediate_size=8192)
    assert extract.default_batch_tokens(model, torch.device("cpu")) == extract.CPU_BATCH_TOKENS
    for free, expected in ((80 << 30, 32768), (2 << 30, 8192), (100 << 20, 4096)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 80 << 30))
        # bf16, (8 × 2048 + 3 × 8192) values per token = 80 KiB: a third of 2 GiB holds 8,738 → 8,192
        assert extract.default_batch_tokens(model, torch.device("cuda")) == expected
