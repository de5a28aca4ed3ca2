"""The TRL reward function: equals the run's mixture reward computed by hand, quantiles over draws, users, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.integrations.trl import MixtureReward, reward_function
from tests.common import assert_close
from tests.tiny_llama import sentences

PROMPTS, COMPLETIONS = sentences(6, 10), sentences(6, 11, length=7)


def by_hand(run: Fit, embedder, prompts, completions, context=None) -> torch.Tensor:
    """(S, n) Σ_k π_k w_skᵀh with π from the saved router on e(x) [; c]."""
    h = embedder.embed_responses(prompts, completions)
    x = embedder.embed_prompts(prompts)
    if context is not None:
        x = torch.cat([x, embedder.embed_texts(context)], dim=1)
    router = run.config.build_model().router
    router.load_state_dict(run.router_state)
    with torch.no_grad():
        pi = router.log_weights(x, len(prompts)).exp()
    return torch.einsum("nk,skd,nd->sn", pi, run.heads, h)


def test_posterior_mean_reward_equals_the_mixture_reward(run_dirs, embedder):
    reward = reward_function(run_dirs["prompt"], embedder=embedder)
    got = reward(prompts=PROMPTS, completions=COMPLETIONS, trainer_state=None)
    run = Fit.load(run_dirs["prompt"])
    assert isinstance(got, list) and len(got) == 6 and all(isinstance(r, float) for r in got)
    assert_close(got, by_hand(run, embedder, PROMPTS, COMPLETIONS)[0], atol=1e-5)
    assert_close(got, run.reward(embedder.embed_responses(PROMPTS, COMPLETIONS), embedder.embed_prompts(PROMPTS)),
                 atol=1e-5)


def test_embedder_built_from_the_run_settings_scores_the_same(run_dirs, embedder, tmp_path, monkeypatch):
    """Without an embedder the run's recorded settings build one (bayesmicro.embed's Embedder when present, which
    stores features in fp16, hence the tolerance)."""
    monkeypatch.setenv("BAYESMICRO_CACHE", str(tmp_path / "cache"))
    reward = reward_function(run_dirs["prompt"], local_files_only=True)
    assert reward.embedder.settings()["template"] == embedder.settings()["template"]
    exact = reward_function(run_dirs["prompt"], embedder=embedder)(PROMPTS, COMPLETIONS)
    assert_close(reward(PROMPTS, COMPLETIONS), exact, atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("quantile", [0.1, 0.5], ids=["q10", "median"])
def test_lower_quantile_over_posterior_draws(run_dirs, embedder, quantile):
    run = Fit.load(run_dirs["draws"])
    assert run.n_draws == 5
    draws = by_hand(run, embedder, PROMPTS, COMPLETIONS)
    reward = reward_function(run_dirs["draws"], embedder=embedder, quantile=quantile)
    assert_close(reward(PROMPTS, COMPLETIONS), torch.quantile(draws, quantile, dim=0), atol=1e-5)
    mean = reward_function(run_dirs["draws"], embedder=embedder)(PROMPTS, COMPLETIONS)
    assert_close(mean, draws.mean(0), atol=1e-5)


def test_conversational_inputs_score_like_plain_strings(run_dirs, embedder):
    reward = reward_function(run_dirs["prompt"], embedder=embedder)
    chats = [[{"role": "system", "content": "be formal"}, {"role": "user", "content": p}] for p in PROMPTS]
    answers = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    assert_close(reward(chats, answers), reward(PROMPTS, COMPLETIONS), atol=1e-6)


def test_user_weights_override_the_router_for_that_user(run_dirs, embedder):
    run = Fit.load(run_dirs["prompt"])
    only_head_1 = torch.tensor([-30.0, 0.0])
    reward = reward_function(run_dirs["prompt"], embedder=embedder, user_log_weights={"alice": only_head_1})
    users = ["alice", "bob"] * 3
    got = torch.tensor(reward(PROMPTS, COMPLETIONS, user=users))
    h = embedder.embed_responses(PROMPTS, COMPLETIONS)
    assert_close(got[0::2], (h @ run.heads[0, 1])[0::2], atol=1e-5)
    assert_close(got[1::2], by_hand(run, embedder, PROMPTS, COMPLETIONS)[0][1::2], atol=1e-5)


def test_context_routed_run_reads_the_context_column(run_dirs, embedder):
    run = Fit.load(run_dirs["context"])
    contexts = ["be concise", "be formal", "be friendly"] * 2
    reward = reward_function(run_dirs["context"], embedder=embedder)
    assert_close(reward(PROMPTS, COMPLETIONS, context=contexts),
                 by_hand(run, embedder, PROMPTS, COMPLETIONS, contexts)[0], atol=1e-5)
    with pytest.raises(BadInput, match="routes on context: pass a 'context' column"):
        reward(PROMPTS, COMPLETIONS)


def test_user_routed_run_reads_the_user_column(embedded, embedder, tmp_path):
    users = np.array(["ann", "bo"] * 20)
    run = fit(replace(embedded, user=users), k=2, router="user", restarts=1)
    run.summary["embedding"] = embedded.meta["embedding"]
    reward = reward_function(run.save(tmp_path / "user_run"), embedder=embedder)
    asked = ["bo", "ann", "cy"] * 2  # cy: a user the run has not seen (zeros in its coding)
    h = embedder.embed_responses(PROMPTS, COMPLETIONS)
    pairs = EmbeddedPairs(chosen=h, rejected=torch.zeros_like(h), prompt=torch.zeros(6, 1), user=np.array(asked))
    pi = run.log_weights(pairs).exp()
    assert_close(reward(PROMPTS, COMPLETIONS, user=asked), torch.einsum("nk,kd,nd->n", pi, run.heads[0], h),
                 atol=1e-5)
    with pytest.raises(BadInput, match="routes on each prompt's user: pass a 'user' column"):
        reward(PROMPTS, COMPLETIONS)


def test_bad_settings_are_bad_input(run_dirs, embedder, tmp_path):
    run = Fit.load(run_dirs["prompt"])
    run.summary = {}
    run.save(tmp_path / "bare")
    with pytest.raises(BadInput, match="does not record its embedding settings"):
        reward_function(tmp_path / "bare")
    wrong = {**embedder.settings(), "template": "plain"}
    with pytest.raises(BadInput, match="chat template .* is not the one the run's features used"):
        reward_function(tmp_path / "bare", embedding=wrong, local_files_only=True)
    with pytest.raises(BadInput, match="quantile must be in"):
        MixtureReward(run, embedder, quantile=1.5)
    with pytest.raises(BadInput, match="expected a string or a list of"):
        MixtureReward(run, embedder)([3], ["x"])
