"""``speed``: stage-1 fit time and held-out NLL of bayesmicro against a plain-PyTorch implementation of the paper's
stage 1, on the same cached features, in one run.

Features have the HelpSteer2 shape (23,500 pairs, d = 3,072, K = 10) and are synthetic: a known mixture population in
``latent_dim`` dimensions lifted into 3,072 by a fixed random linear map plus isotropic noise (real LLM features also
have a low effective rank). Both fits see exactly the same tensors and the same train/test split.

The paper's recipe (``fit_paper_stage1``): K linear heads without bias on the response features, a router with one
hidden layer of 128 units on the prompt features, loss = mean mixture NLL + α·Σ_k π_k log π_k with α = 0.5, AdamW
(lr 2e-3, torch's default weight decay), batch 32, one epoch, linear warm-up over the first 5 % of steps then linear
decay to 0 (the Hugging Face trainer's default schedule). It is written directly in torch on purpose: it is the
independent reference, not a second use of bayesmicro's math core.

Embedding throughput (``bayesmicro.bench.embed_throughput``, its own table): a naive one-example-per-forward loop, a
plain length-sorted token-budget PyTorch loop (the reference) and bayesmicro's extraction on the same texts, with
tokens/s, TFLOP/s and the share of the matmul peak measured on the device; a random Llama built from a config — small
and fp32 on CPU, Llama-3.2-1B-sized and bf16 on a GPU (``device``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bayesmicro.bench.report import log, markdown_table, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.map import Schedule
from bayesmicro.methods import Optimizer


@dataclass(frozen=True)
class SpeedSpec:
    n_pairs: int = 23_500
    dim: int = 3072
    k: int = 10
    latent_dim: int = 64
    noise: float = 0.1
    test_fraction: float = 0.2
    threads: int = 1


def make_features(spec: SpeedSpec, seed: int) -> tuple[EmbeddedPairs, torch.Tensor]:
    """Cached features of the requested shape and the true P(chosen ≻ rejected) of every pair, (n,).

    A ``PopulationSpec`` population in ``latent_dim`` dimensions (router driven by the prompt) is lifted to ``dim``
    columns by one random map L (latent_dim, dim) shared by responses and prompts: h = z L + noise·ε."""
    pop = PopulationSpec(n_pairs=spec.n_pairs, dim=spec.latent_dim, prompt_dim=spec.latent_dim, context_dim=4,
                         k=spec.k, prompt_weight=1.0, router_sharpness=4.0, test_fraction=spec.test_fraction)
    low, truth = make_population(pop, seed)
    gen = torch.Generator().manual_seed(10_000 + seed)
    lift = torch.randn(spec.latent_dim, spec.dim, generator=gen) / math.sqrt(spec.latent_dim)

    def up(x: torch.Tensor) -> torch.Tensor:
        return x @ lift + spec.noise * torch.randn(x.shape[0], spec.dim, generator=gen)

    data = EmbeddedPairs(chosen=up(low.chosen), rejected=up(low.rejected), prompt=up(low.prompt),
                         group=low.group, split=low.split, meta={"speed": asdict(spec), "seed": seed},
                         source=f"<speed features seed={seed}>")
    return data, truth.prob(low)


class PaperStage1(nn.Module):
    """The paper's stage-1 model: K bias-free linear heads and a one-hidden-layer router on prompt features."""

    def __init__(self, dim: int, prompt_dim: int, k: int, hidden: int = 128):
        super().__init__()
        self.heads = nn.Linear(dim, k, bias=False)
        self.router = nn.Sequential(nn.Linear(prompt_dim, hidden), nn.ReLU(), nn.Linear(hidden, k))

    def log_lik_and_log_pi(self, chosen, rejected, prompt) -> tuple[torch.Tensor, torch.Tensor]:
        margins = self.heads(chosen) - self.heads(rejected)
        log_pi = torch.log_softmax(self.router(prompt), dim=-1)
        return torch.logsumexp(log_pi + F.logsigmoid(margins), dim=-1), log_pi

    @torch.no_grad()
    def predict_proba(self, data: EmbeddedPairs) -> torch.Tensor:
        return self.log_lik_and_log_pi(data.chosen.float(), data.rejected.float(), data.prompt.float())[0].exp()


def fit_paper_stage1(train: EmbeddedPairs, k: int, seed: int, *, lr: float = 2e-3, batch_size: int = 32,
                     epochs: int = 1, warmup: float = 0.05, alpha: float = 0.5) -> PaperStage1:
    torch.manual_seed(seed)
    model = PaperStage1(train.dim, train.prompt_dim, k)
    chosen, rejected, prompt = train.chosen.float(), train.rejected.float(), train.prompt.float()
    n = len(train)
    total = epochs * math.ceil(n / batch_size)
    warm = max(1, int(warmup * total))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm else max(0.0, (total - t) / max(1, total - warm)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            log_lik, log_pi = model.log_lik_and_log_pi(chosen[idx], rejected[idx], prompt[idx])
            loss = -log_lik.mean() + alpha * (log_pi.exp() * log_pi).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/speed", spec: SpeedSpec = SpeedSpec(),
        schedule: Schedule | None = None, restarts: int = 1, device: str = "auto", embed: bool = True,
        embed_texts: int | None = None, embed_size: str = "auto", **_: Any) -> dict[str, Any]:
    """Per seed: build the features once, then time the paper recipe and ``bayesmicro.fit(k, router='prompt')`` (its
    default ``Schedule``, ``restarts`` restarts; the recipe is one run) on the same training pairs in the same process;
    score both on the same held-out pairs. Then (``embed``) the embedding throughput on ``device`` (``embed_texts``
    texts, model ``embed_size``; defaults per device in ``embed_throughput.DEFAULTS``)."""
    from bayesmicro.embed.backbone import pick_device

    pick_device(device)  # a bad or unavailable device is bad input before any work
    torch.set_num_threads(spec.threads)
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])  # first optimizer of a process imports torch._dynamo (seconds)
    rows, per_seed = [], []
    for seed in range(seeds):
        data, true_prob = make_features(spec, seed)
        test = data.part("test")
        oracle = score(true_prob[torch.from_numpy(data.split == "test")])
        start = time.perf_counter()  # both timings start from the same in-memory features with their split
        paper = fit_paper_stage1(data.part("train"), spec.k, seed)
        paper_seconds = time.perf_counter() - start
        paper_score = score(paper.predict_proba(test))
        start = time.perf_counter()
        ours = fit(data, k=spec.k, router="prompt", seed=seed, restarts=restarts, schedule=schedule)
        ours_seconds = time.perf_counter() - start
        ours_score = score(ours.predict_proba(test))
        log(f"speed: seed {seed}: paper recipe {paper_seconds:.1f} s (NLL {paper_score['nll']:.4f}), bayesmicro "
            f"{ours_seconds:.1f} s (NLL {ours_score['nll']:.4f})")
        per_seed.append({
            "seed": seed, "oracle_nll": oracle["nll"],
            "paper": {"seconds": paper_seconds, "nll": paper_score["nll"], "accuracy": paper_score["accuracy"]},
            "bayesmicro": {"seconds": ours_seconds, "nll": ours_score["nll"], "accuracy": ours_score["accuracy"]},
            "time_ratio": ours_seconds / paper_seconds,
            "nll_no_worse": ours_score["nll"] <= paper_score["nll"],
        })
    for name in ("paper", "bayesmicro"):
        rows.append({"method": name, "fit seconds": _mean([r[name]["seconds"] for r in per_seed]),
                     "held-out NLL": _mean([r[name]["nll"] for r in per_seed]),
                     "accuracy": _mean([r[name]["accuracy"] for r in per_seed])})
    rows.append({"method": "oracle", "held-out NLL": _mean([r["oracle_nll"] for r in per_seed])})
    ratio = _mean([r["time_ratio"] for r in per_seed])
    target_met = all(r["nll_no_worse"] and r["time_ratio"] <= 1.5 for r in per_seed)
    results = {
        "seeds": list(range(seeds)), "spec": asdict(spec), "restarts": restarts,
        "schedule": asdict(schedule or Schedule()), "per_seed": per_seed, "time_ratio": ratio,
        "target": "bayesmicro held-out NLL ≤ paper recipe's, in ≤ 1.5× its time", "target_met": target_met,
    }
    table = markdown_table(rows, ["method", "fit seconds", "held-out NLL", "accuracy"])
    used = schedule or Schedule()
    n_train = int((data.split == "train").sum())
    epochs = used.adam_epochs(n_train, 2 * spec.dim) if used.resolve(n_train, 2 * spec.dim) == Optimizer.ADAM else None
    how = (f"bayesmicro: `bayesmicro.fit(k={spec.k}, router='prompt')` with its default schedule (AdamW, batch "
           f"{used.batch_size}, lr {used.lr:g}, {epochs} epochs by the work budget), {restarts} restart(s); paper: "
           f"AdamW lr 2e-3, batch 32, one epoch, 5 % warm-up, α = 0.5. Both timings include taking the training "
           f"split from the same in-memory features.")
    text = (f"{spec.n_pairs:,} pairs ({n_train:,} train), d = {spec.dim:,}, "
            f"K = {spec.k}, {spec.threads} torch thread(s). {how} Time ratio bayesmicro / paper recipe: "
            f"**{ratio['mean']:.2f}** (target ≤ 1.5 with NLL no worse: {'met' if target_met else 'not met'}).\n\n{table}")
    sections = [("Stage-1 fit: bayesmicro vs the paper's recipe", text)]
    if embed:
        from bayesmicro.bench import embed_throughput

        results["embed_throughput"] = embed_throughput.measure(device, embed_size, embed_texts)
        through = results["embed_throughput"]
        log(f"speed: embedding {through['library']['tokens_per_second']:.0f} tokens/s (library, "
            f"{100 * through['library']['share_of_peak']:.1f} % of the matmul peak) vs "
            f"{through['reference']['tokens_per_second']:.0f} (reference loop) and "
            f"{through['naive']['tokens_per_second']:.0f} (naive) on {through['device']}")
        sections.append(("Embedding throughput: naive loop, reference loop and bayesmicro's extraction",
                         embed_throughput.markdown(through)))
    return write_suite(out_dir, "speed", results, sections)


def _mean(values: list[float]) -> dict[str, float]:
    from bayesmicro.bench.report import mean_sd

    return mean_sd(values)
