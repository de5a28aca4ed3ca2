"""Embedder: batched extraction equals one-at-a-time forward passes; dedup, cache, OOM back-off, settings."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols.transcript import parse_transcript
from bayesmicro.embed import Embedder, default_model_path
from bayesmicro.embed import extract
from bayesmicro.embed.extract import Extractor, plan_batches
from bayesmicro.embed.pooling import last_token_index, pool
from bayesmicro.errors import BadInput
from tests.common import assert_close

PROMPTS = ["Human: what is two plus two?", "Human: name a colour\n\nAssistant: red\n\nHuman: another one",
           "Human: what is two plus two?", "Human: say something long " + "word " * 40]
CHOSEN = ["four", "blue", "it is 4", "a long answer " * 10]
REJECTED = ["five", "a", "22", "no"]


def pairs(with_labels: bool = True) -> PreferencePairs:
    columns = {"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED}
    if with_labels:
        columns |= {"context": ["be exact", "be brief", "be exact", "be brief"], "group": ["a", "b", "a", "b"],
                    "user": ["u1", "u2", "u3", "u1"], "split": ["train", "train", "test", "test"]}
    return PreferencePairs.from_dict(columns)


def test_pooling_last_token_for_either_padding_side():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert last_token_index(right).tolist() == [2, 1]
    assert last_token_index(left).tolist() == [3, 3]
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    assert_close(pool(hidden, right, "last"), hidden[[0, 1], [2, 1]])
    assert_close(pool(hidden, right, "mean"), torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)]))


def test_plan_is_longest_first_and_deterministic():
    lengths, keys = [3, 9, 9, 1, 5], ["e", "b", "a", "d", "c"]
    assert plan_batches(lengths, keys, 2) == [[2, 1], [4, 0], [3]]


@pytest.mark.parametrize("max_tokens", [None, 1024], ids=["no_token_cap", "cap1024"])
@pytest.mark.parametrize("batch_size", [1, 4, 16], ids=lambda b: f"batch{b}")
def test_plan_bounds_padding_and_closes_a_batch_only_when_it_must(batch_size, max_tokens):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 400, (300,), generator=g).tolist()
    keys = [f"k{i:03d}" for i in range(300)]
    plan = plan_batches(lengths, keys, batch_size, max_padding=0.2, max_tokens=max_tokens)
    cap = max_tokens or float("inf")
    assert [i for batch in plan for i in batch] == sorted(range(300), key=lambda i: (-lengths[i], keys[i]))

    def padding(batch):
        longest = max(lengths[i] for i in batch)
        return 1 - sum(lengths[i] for i in batch) / (longest * len(batch))

    def padded(batch):
        return max(lengths[i] for i in batch) * len(batch)

    assert all(len(b) <= batch_size and padding(b) <= 0.2 + 1e-12 for b in plan)
    assert all(padded(b) <= cap for b in plan if len(b) > 1)
    for batch, following in zip(plan, plan[1:]):
        grown = batch + following[:1]
        assert len(batch) == batch_size or padding(grown) > 0.2 or padded(grown) > cap


def test_batched_extraction_equals_one_text_per_forward(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_model, local_files_only=True).eval()
    embedder = Embedder(tiny_model, batch_size=3, cache_dir=str(tmp_path), device="cpu")  # the fp32 reference
    data = embedder.embed_pairs(pairs())
    for i, (prompt, chosen) in enumerate(zip(PROMPTS, CHOSEN)):
        messages = parse_transcript(prompt)
        text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": chosen}], tokenize=False)
        with torch.no_grad():
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            reference = model(**ids).last_hidden_state[0, -1]
        # padded batch vs unpadded single pass: equal up to float32 reassociation, then fp16 storage
        assert_close(data.chosen[i], reference, atol=2e-3, rtol=2e-3, msg=f"pair {i}")
    assert data.chosen.dtype == torch.float32 and data.dim == 32


def test_labels_context_and_meta_carried_over(tiny_model, tmp_path):
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path))
    data = embedder.embed_pairs(pairs())
    assert data.group.tolist() == ["a", "b", "a", "b"] and data.user.tolist() == ["u1", "u2", "u3", "u1"]
    assert data.split.tolist() == ["train", "train", "test", "test"]
    assert data.context.shape == (4, 32)
    assert torch.equal(data.context[0], data.context[2]) and not torch.equal(data.context[0], data.context[1])
    assert torch.equal(data.prompt[0], data.prompt[2])  # same prompt → same e(x)
    assert data.meta["embedding"] == embedder.settings()
    assert json.loads(json.dumps(embedder.settings())) == embedder.settings()
    plain = Embedder(tiny_model, cache_dir=str(tmp_path)).embed_pairs(pairs(with_labels=False))
    assert plain.context is None and plain.group is None


def test_each_distinct_text_embedded_once_and_rerun_is_a_cache_hit(tiny_model, tmp_path):
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path))
    first = embedder.embed_pairs(pairs())
    # 8 pair texts, 3 distinct prompts, 2 distinct contexts
    assert embedder.last_stats["texts"] == 13 and embedder.last_stats["computed"] == 13
    again = Embedder(tiny_model, cache_dir=str(tmp_path))
    second = again.embed_pairs(pairs())
    assert again.last_stats["cache_hits"] == 13 and again.last_stats["computed"] == 0
    assert again._extractor is None  # the model was never loaded
    for key in ("chosen", "rejected", "prompt", "context"):
        assert torch.equal(getattr(first, key), getattr(second, key))


def test_cache_is_keyed_by_settings(tiny_model, tmp_path):
    last = Embedder(tiny_model, cache_dir=str(tmp_path))
    mean = Embedder(tiny_model, pooling="mean", cache_dir=str(tmp_path))
    short = Embedder(tiny_model, max_length=8, cache_dir=str(tmp_path))
    assert len({last.cache.folder, mean.cache.folder, short.cache.folder}) == 3
    a, b = last.embed_responses(["q"], ["a"]), mean.embed_responses(["q"], ["a"])
    assert not torch.equal(a, b)
    same = Embedder(**{k: v for k, v in last.settings().items() if k != "template"}, cache_dir=str(tmp_path))
    assert same.cache.folder == last.cache.folder


def test_damaged_shard_is_recomputed(tiny_model, tmp_path, capsys):
    embedder = Embedder(tiny_model, batch_size=2, cache_dir=str(tmp_path))
    reference = embedder.embed_responses(PROMPTS, CHOSEN)
    shard = sorted(embedder.cache.folder.glob("shard-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    again = Embedder(tiny_model, batch_size=2, cache_dir=str(tmp_path))
    assert "damaged cache shard" in capsys.readouterr().err
    assert torch.equal(again.embed_responses(PROMPTS, CHOSEN), reference)
    assert again.last_stats["computed"] == 4


def test_out_of_memory_halves_the_token_budget(tiny_model, tmp_path, monkeypatch):
    reference = Embedder(tiny_model, cache_dir=str(tmp_path / "a")).embed_responses(PROMPTS, CHOSEN)
    real_forward = Extractor.forward
    sizes = []

    def forward(self, batch):
        sizes.append(len(batch.ids))
        if len(batch.ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, batch)

    monkeypatch.setattr(Extractor, "forward", forward)
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path / "b"))
    values = embedder.embed_responses(PROMPTS, CHOSEN)
    # the whole block, then batches of at most half as many texts, each text finally alone exactly once
    assert sizes[0] == 4 and max(sizes[1:]) <= 2 and sizes.count(1) == 4
    assert embedder._extractor.max_batch_tokens < 1024 and embedder._extractor.batch_size == 1
    assert_close(values, reference, atol=2e-3, rtol=2e-3)
    monkeypatch.setattr(Extractor, "forward", lambda self, batch: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(BadInput, match="out of memory on a single text"):
        Embedder(tiny_model, cache_dir=str(tmp_path / "c")).embed_responses(PROMPTS[:1], CHOSEN[:1])


def test_default_backbone_is_minilm_mean_pooling(tmp_path):
    embedder = Embedder(cache_dir=str(tmp_path), device="cpu")  # the fp32 reference is computed on the CPU
    assert embedder.settings()["pooling"] == "mean" and embedder.settings()["template"] == "plain"
    assert embedder.settings()["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    values = embedder.embed_responses(["Human: hello"], ["hi, how are you?"])
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    model = AutoModel.from_pretrained(default_model_path(), local_files_only=True).eval()
    ids = tokenizer("Human: hello\n\nhi, how are you?", return_tensors="pt")
    with torch.no_grad():
        reference = model(**ids).last_hidden_state[0].mean(0)
    assert_close(values[0], reference.half().float(), atol=1e-3, rtol=0)


def test_bad_arguments(tiny_model, tmp_path):
    with pytest.raises(BadInput, match="--pooling"):
        Embedder(tiny_model, pooling="max", cache_dir=str(tmp_path))
    with pytest.raises(BadInput, match="model folder"):
        Embedder(str(tmp_path / "nope" / "x" / "y"), cache_dir=str(tmp_path))
    with pytest.raises(BadInput, match="responses"):
        Embedder(tiny_model, cache_dir=str(tmp_path)).embed_responses(["a", "b"], ["c"])
    assert np.isfinite(Embedder(tiny_model, cache_dir=str(tmp_path)).embed_responses(["a"], ["c"]).numpy()).all()


def test_cache_root_from_environment_and_fp16_range(monkeypatch, tmp_path):
    from bayesmicro.embed.cache import EmbeddingCache, default_cache_root

    monkeypatch.setenv("BAYESMICRO_CACHE", str(tmp_path / "env_cache"))
    assert default_cache_root() == tmp_path / "env_cache"
    cache = EmbeddingCache(None, {"model": "m"})
    cache.put(["k1"], torch.tensor([[1.0, -2.5]]))
    assert cache.get(["k1"]).dtype == torch.float16 and "k1" in cache
    with pytest.raises(BadInput, match="float16 range"):
        cache.put(["k2"], torch.tensor([[1e6, 0.0]]))
    wide = EmbeddingCache(None, {"model": "m"}, storage_dtype="float32")
    wide.put(["k2"], torch.tensor([[1e6, 0.0]]))
    assert wide.get(["k2"])[0, 0].item() == 1e6


@pytest.mark.parametrize("model", ["/no/such/folder", "./missing", "~/missing-model", "org/name/extra"],
                         ids=["absolute", "relative", "home", "three-parts"])
def test_a_missing_model_folder_is_named_before_any_hub_lookup(model):
    from bayesmicro.embed.backbone import resolve

    with pytest.raises(BadInput, match=f"^{model}: model folder not found"):
        resolve(model, None)
