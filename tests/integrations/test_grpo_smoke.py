"""Smoke test: TRL's GRPOTrainer trains a tiny random policy for one step on CPU with the bayesmicro reward."""

from __future__ import annotations

import math

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from bayesmicro.integrations.trl import reward_function
from tests.tiny_llama import sentences


def test_grpo_runs_one_step_with_the_mixture_reward(run_dirs, embedder, tiny_llama, tmp_path):
    calls = []
    reward = reward_function(run_dirs["draws"], embedder=embedder, quantile=0.1)

    def recorded(prompts, completions, **kwargs):
        values = reward(prompts, completions, **kwargs)
        calls.append((list(prompts), list(completions), values))
        return values

    recorded.__name__ = "bayesmicro"
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, local_files_only=True)
    train = datasets.Dataset.from_dict({"prompt": sentences(4, 20)})
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=1, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                      report_to="none", use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=policy, reward_funcs=recorded, args=args, train_dataset=train,
                          processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 1
    assert calls and all(len(v) == len(p) for p, _, v in calls)
    prompts, completions, values = calls[0]
    assert all(math.isfinite(v) for v in values)
    # the trainer's logged reward is the mean of what our function returned for its completions
    logged = trainer.state.log_history[0]
    assert math.isclose(logged["rewards/bayesmicro/mean"], sum(values) / len(values), rel_tol=1e-5, abs_tol=1e-6)
    assert values == reward(prompts, completions)  # deterministic: the same completions score the same
    changed = any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert changed, "one GRPO step should move the policy"
