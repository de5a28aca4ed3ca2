"""`bayesmicro embed`: JSON report, a folder `bayesmicro fit` reads, one-line errors with exit code 2."""

import json

from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.data.embedded import EmbeddedPairs
from tests.embed.tiny import build_tiny_chat_model  # noqa: F401  (fixture builder lives with the embed tests)


def _data(path, n=24):
    rows = [{"prompt": f"Human: question {i} " + "and more " * (i % 3), "chosen": f"a helpful answer {i}",
             "rejected": f"no {i}", "group": "g1" if i % 2 else "g2", "user": f"u{i % 3}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_embed_then_fit(tmp_path):
    model = str(build_tiny_chat_model(tmp_path / "tiny"))
    runner = CliRunner()
    args = ["embed", str(_data(tmp_path / "pairs.jsonl")), "--model", model, "--limit", "20", "--out",
            str(tmp_path / "emb"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"pairs", "tokens", "seconds", "pairs_per_second", "cache_hits"} <= set(report)
    assert report["pairs"] == 20 and report["cache_hits"] == 0 and report["tokens"] > 0
    data = EmbeddedPairs.load(tmp_path / "emb")
    assert len(data) == 20 and data.dim == 32 and set(data.group) == {"g1", "g2"}
    assert data.meta["embedding"]["pooling"] == "last" and data.meta["embedding"]["template"].startswith("chat:")

    refused = runner.invoke(app, args)  # its own earlier output: replaced only when asked
    assert refused.exit_code == 2 and "pass --overwrite" in refused.output
    again = json.loads(runner.invoke(app, [*args, "--overwrite"]).stdout.strip().splitlines()[-1])
    assert again["cache_hits"] == report["texts"] and again["tokens"] == 0

    fit = runner.invoke(app, ["fit", str(tmp_path / "emb"), "--router", "prompt", "--k", "2", "--restarts", "1",
                              "--json"])
    assert fit.exit_code == 0, fit.output
    assert 0.0 <= json.loads(fit.stdout.strip().splitlines()[-1])["routed_mixture"]["accuracy"] <= 1.0


def test_bad_input_is_one_line_exit_2(tmp_path):
    runner = CliRunner()
    data = _data(tmp_path / "pairs.jsonl", n=3)
    for extra, message in ((["--protocol", "nope"], "unknown protocol"), (["--pooling", "max"], "--pooling"),
                           (["--batch-size", "0"], "--batch-size"), (["--device", "tpu"], "--device"),
                           (["--max-batch-tokens", "0"], "--max-batch-tokens"), (["--batching", "ragged"],
                                                                                  "--batching")):
        result = runner.invoke(app, ["embed", str(data), "--out", str(tmp_path / "o"), "--cache-dir",
                                     str(tmp_path / "c"), *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_embed_shards_writes_the_training_pairs_as_a_store_fit_streams(tmp_path):
    import numpy as np
    import torch

    from bayesmicro.data.shards import ShardStore

    model = str(build_tiny_chat_model(tmp_path / "tiny"))
    path = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in _data(tmp_path / "raw.jsonl", n=30).read_text().splitlines()]
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 5 == 0 else "train"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    common = [str(path), "--model", model, "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--json"]
    whole = runner.invoke(app, ["embed", *common, "--out", str(tmp_path / "emb")])
    store_run = runner.invoke(app, ["embed", *common, "--shards", "--out", str(tmp_path / "store")])
    assert whole.exit_code == 0 and store_run.exit_code == 0, whole.output + store_run.output
    report = json.loads(store_run.stdout.strip().splitlines()[-1])
    assert report["format"] == "shards" and report["pairs"] == 24 and report["held_out_skipped"] == 6
    assert report["cache_hits"] == report["texts"]  # the same texts: all from the cache the first run filled

    train = EmbeddedPairs.load(tmp_path / "emb").part("train")
    store = ShardStore(tmp_path / "store")
    block = store.read(store.blocks(len(store))[0])
    order = np.random.default_rng(0).permutation(24)  # the store's rows: the training pairs, shuffled with seed 0
    for key in ("chosen", "rejected", "prompt"):
        assert torch.equal(block[key].float(), getattr(train, key)[order])
    assert store.meta["embedding"] == train.meta["embedding"]

    fit = runner.invoke(app, ["fit-store", str(tmp_path / "store"), "--k", "2", "--epochs", "3", "--out",
                              str(tmp_path / "run"), "--json"])
    assert fit.exit_code == 0, fit.output
    scored = runner.invoke(app, ["eval", str(tmp_path / "run"), str(tmp_path / "emb"), "--json"])
    assert scored.exit_code == 0 and json.loads(scored.stdout.strip().splitlines()[-1])["n"] == 6


def test_token_budget_and_batching_options(tmp_path):
    """--max-batch-tokens and --batching reach the extraction; a packed and a padded run write the same features."""
    model = str(build_tiny_chat_model(tmp_path / "tiny"))
    runner = CliRunner()
    data = _data(tmp_path / "pairs.jsonl", n=12)
    values = {}
    for batching in ("packed", "padded"):
        result = runner.invoke(app, ["embed", str(data), "--model", model, "--out", str(tmp_path / batching),
                                     "--cache-dir", str(tmp_path / f"cache-{batching}"), "--device", "cpu",
                                     "--max-batch-tokens", "64", "--batching", batching, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["batching"] == batching and report["max_batch_tokens"] == 64
        values[batching] = EmbeddedPairs.load(tmp_path / batching)
    for key in ("chosen", "rejected", "prompt"):
        a, b = getattr(values["packed"], key).float(), getattr(values["padded"], key).float()
        assert (a - b).abs().max() <= 2e-3 * b.abs().max()  # fp16 storage of fp32 features equal to rounding
