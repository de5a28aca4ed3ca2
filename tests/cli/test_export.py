"""`bayesmicro export`: the exported sequence classifier scores (prompt, response) exactly as the run's mixture."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.integrations.backbone import BackboneEmbedder
from tests.common import assert_close
from tests.tiny_llama import build_tiny_bert, build_tiny_llama, embedded, embedder, run_dirs, sentences, tiny_llama  # noqa: F401

PROMPTS = sentences(5, 30, length=3)
RESPONSES = [sentences(1, 31 + i, length=2 + 3 * i)[0] for i in range(5)]  # lengths differ: padding is exercised


def exported_scores(folder, embedder, prompts, responses) -> torch.Tensor:
    """Score like any RLHF stack would: tokenizer + AutoModelForSequenceClassification, right-padded batch."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [embedder.pair_text(p, r)[0] for p, r in zip(prompts, responses)]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).unique().numel() > 1
    with torch.no_grad():
        return model(**batch).logits[:, 0]


def run_export(*args):
    result = CliRunner().invoke(app, ["export", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_for_a_context_equals_the_mixture_reward(run_dirs, embedder, tiny_llama, tmp_path):
    report = run_export(run_dirs["prompt"], "--backbone", tiny_llama, "--context", "be concise", "--out",
                        tmp_path / "rm")
    run = Fit.load(run_dirs["prompt"])
    h = embedder.embed_responses(PROMPTS, RESPONSES)
    e = embedder.embed_prompts(["be concise"]).expand(len(PROMPTS), -1)
    expected = run.reward(h, router_input=e)
    assert_close(exported_scores(tmp_path / "rm", embedder, PROMPTS, RESPONSES), expected, atol=1e-3)
    assert report["architecture"] == "LlamaForSequenceClassification" and report["k"] == 2
    assert_close(report["mixture_weights"], _router_pi(run, e[:1])[0], atol=1e-6)
    saved = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"]


def _router_pi(run: Fit, x: torch.Tensor) -> torch.Tensor:
    router = run.config.build_model().router
    router.load_state_dict(run.router_state)
    with torch.no_grad():
        return router.log_weights(x, x.shape[0]).exp()


def test_export_static_weights_of_a_context_routed_run(run_dirs, embedder, tiny_llama, tmp_path):
    report = run_export(run_dirs["context"], "--backbone", tiny_llama, "--weights", "static", "--out",
                        tmp_path / "rm")
    run = Fit.load(run_dirs["context"])
    pi = _router_pi(run, run.router_state["input_mean"][None])[0]  # the router at the mean training input
    assert_close(report["mixture_weights"], pi, atol=1e-6)
    h = embedder.embed_responses(PROMPTS, RESPONSES)
    expected = h @ (pi @ run.heads.mean(0))
    assert_close(exported_scores(tmp_path / "rm", embedder, PROMPTS, RESPONSES), expected, atol=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--weights", "static", "--context", "x"], "exactly one of --context TEXT and --weights static"),
    ([], "exactly one of --context TEXT and --weights static"),
    (["--weights", "dynamic"], "--weights must be 'static'"),
], ids=["both", "neither", "bad-weights"])
def test_export_bad_options_exit_2(run_dirs, tiny_llama, tmp_path, args, message):
    result = CliRunner().invoke(app, ["export", str(run_dirs["prompt"]), "--backbone", str(tiny_llama), "--out",
                                      str(tmp_path / "rm"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "rm").exists()


def test_export_with_a_missing_backbone_folder_exits_2(run_dirs, tmp_path):
    missing = tmp_path / "no_such_backbone"
    result = CliRunner().invoke(app, ["export", str(run_dirs["prompt"]), "--backbone", str(missing), "--weights",
                                      "static", "--out", str(tmp_path / "rm")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {missing}: model folder not found (expected a hub id like 'org/name' " \
                                    "or a local folder)"
    assert not (tmp_path / "rm").exists()


def test_export_with_a_different_backbone_exits_2(run_dirs, tmp_path):
    other = build_tiny_llama(tmp_path / "wide", hidden=48)
    result = CliRunner().invoke(app, ["export", str(run_dirs["prompt"]), "--backbone", str(other), "--weights",
                                      "static", "--out", str(tmp_path / "rm")])
    assert result.exit_code == 2 and "hidden size is 48, the run's features have 32 columns" in result.output
    assert not (tmp_path / "rm").exists()


def test_the_backbone_defaults_to_the_one_the_run_records(run_dirs, tiny_llama, tmp_path):
    report = run_export(run_dirs["prompt"], "--context", "be concise", "--out", tmp_path / "rm")
    given = run_export(run_dirs["prompt"], "--backbone", tiny_llama, "--context", "be concise", "--out",
                       tmp_path / "rm2")
    assert report["backbone"] == str(tiny_llama) and report["mixture_weights"] == given["mixture_weights"]
    unrecorded = Fit.load(run_dirs["prompt"])
    unrecorded.summary.pop("embedding")
    unrecorded.save(tmp_path / "bare")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "bare"), "--weights", "static", "--out",
                                      str(tmp_path / "rm3")])
    assert result.exit_code == 2 and "give --backbone" in result.stderr and not (tmp_path / "rm3").exists()


# -- mean-pooled encoders: the exported folder carries MeanPooledRewardModel (trust_remote_code) -----------------
def _mean_pooled_run(embedder, folder) -> Fit:
    """A prompt-routed K = 2 run on 40 pairs embedded by ``embedder`` (mean pooling), saved to ``folder``."""
    prompts, chosen, rejected = sentences(40, 1), sentences(40, 2), sentences(40, 3)
    pairs = EmbeddedPairs(chosen=embedder.embed_responses(prompts, chosen),
                          rejected=embedder.embed_responses(prompts, rejected),
                          prompt=embedder.embed_prompts(prompts), meta={"embedding": embedder.settings()})
    run = fit(pairs, k=2, router="prompt", restarts=1)
    run.save(folder)
    return run


def remote_code_scores(folder, prompts, responses) -> torch.Tensor:
    """Score as a user of the folder would, without bayesmicro: default special tokens, right-padded, truncated."""
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer([f"{p}\n\n{r}" for p, r in zip(prompts, responses)], padding=True, truncation=True,
                      return_tensors="pt")
    assert batch["attention_mask"].sum(1).unique().numel() > 1
    with torch.no_grad():
        return model(**batch).logits[:, 0]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def test_a_mean_pooled_encoder_exports_with_its_own_head(tiny_bert, tmp_path):
    bert = BackboneEmbedder(str(tiny_bert), pooling="mean", local_files_only=True)
    run = _mean_pooled_run(bert, tmp_path / "run")
    report = run_export(tmp_path / "run", "--context", "be concise", "--out", tmp_path / "rm")
    e = bert.embed_prompts(["be concise"]).expand(len(PROMPTS), -1)
    expected = run.reward(bert.embed_responses(PROMPTS, RESPONSES), router_input=e)
    assert_close(remote_code_scores(tmp_path / "rm", PROMPTS, RESPONSES), expected, atol=1e-4)
    assert report["architecture"] == "MeanPooledRewardModel" and report["pooling"] == "mean"
    assert report["trust_remote_code"] is True
    saved = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForSequenceClassification"] == \
        "mean_pooled_reward.MeanPooledRewardModel"
    module = (tmp_path / "rm" / "mean_pooled_reward.py").read_text()
    assert "import bayesmicro" not in module and "from bayesmicro" not in module  # loads without bayesmicro
    with pytest.raises(ValueError, match="custom code"):  # never a silent BERT with a fresh classifier instead
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")


def test_a_mean_pooled_run_refuses_a_decoder_of_another_width(tiny_bert, tmp_path):
    bert = BackboneEmbedder(str(tiny_bert), pooling="mean", local_files_only=True)
    _mean_pooled_run(bert, tmp_path / "run")
    other = build_tiny_llama(tmp_path / "wide", hidden=48)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--backbone", str(other), "--weights",
                                      "static", "--out", str(tmp_path / "rm")])
    assert result.exit_code == 2 and "hidden size is 48, the run's features have 32 columns" in result.output
    assert not (tmp_path / "rm").exists()


def test_the_default_minilm_backbone_exports(tmp_path):
    """A run on features of the default backbone (all-MiniLM-L6-v2, mean pooling) exports without --backbone."""
    from bayesmicro.embed import Embedder

    minilm = Embedder(device="cpu", storage_dtype="float32", cache_dir=tmp_path / "cache")  # exact features
    run = _mean_pooled_run(minilm, tmp_path / "run")
    report = run_export(tmp_path / "run", "--weights", "static", "--out", tmp_path / "rm")
    pi = torch.tensor(report["mixture_weights"])
    expected = minilm.embed_responses(PROMPTS, RESPONSES) @ (pi @ run.heads.mean(0))
    assert_close(remote_code_scores(tmp_path / "rm", PROMPTS, RESPONSES), expected, atol=1e-4)
    assert report["architecture"] == "MeanPooledRewardModel" and report["head_norm"] > 0
