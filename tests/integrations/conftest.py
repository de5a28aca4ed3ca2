from __future__ import annotations

import random

import pytest
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.infer.api import fit
from bayesmicro.integrations.backbone import BackboneEmbedder
from tests.tiny_llama import WORDS, build_tiny_llama


def sentences(n: int, seed: int, length: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def embedder(tiny_llama):
    return BackboneEmbedder(str(tiny_llama), pooling="last", local_files_only=True)


@pytest.fixture(scope="session")
def embedded(embedder):
    """40 text pairs embedded by the tiny backbone, with one context string per pair."""
    prompts, chosen, rejected = sentences(40, 1), sentences(40, 2), sentences(40, 3)
    contexts = [random.Random(i).choice(["be concise", "be formal", "be friendly"]) for i in range(40)]
    return EmbeddedPairs(chosen=embedder.embed_responses(prompts, chosen),
                         rejected=embedder.embed_responses(prompts, rejected),
                         prompt=embedder.embed_prompts(prompts), context=embedder.embed_texts(contexts),
                         meta={"embedding": embedder.settings()})


@pytest.fixture(scope="session")
def run_dirs(embedded, tmp_path_factory):
    """Saved runs: prompt-routed MAP, the same with 5 perturbed head draws, context-routed MAP."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    prompt_run = fit(embedded, k=2, router="prompt", restarts=1)
    prompt_run.summary["embedding"] = embedded.meta["embedding"]
    out["prompt"] = prompt_run.save(root / "prompt")
    g = torch.Generator().manual_seed(0)
    draws = prompt_run.heads + 0.3 * torch.randn(5, *prompt_run.heads.shape[1:], generator=g)
    type(prompt_run)(prompt_run.config, draws, prompt_run.router_state, prompt_run.summary).save(root / "draws")
    out["draws"] = root / "draws"
    context_run = fit(embedded, k=2, router="context", restarts=1)
    context_run.summary["embedding"] = embedded.meta["embedding"]
    out["context"] = context_run.save(root / "context")
    return out
