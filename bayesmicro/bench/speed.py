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


@dataclass(frozen=True)
class OptimumSpec(SpeedSpec):
    """The time-to-optimum study: features as ``SpeedSpec`` builds them, on a problem small enough for full-batch
    optimisation (the default backbone's width)."""

    n_pairs: int = 6_000
    dim: int = 384
    k: int = 4
    within: float = 0.002  # "at the optimum": training objective per pair within this of the best any run reaches
    long_iterations: int = 2000  # the long reference run that finds the best objective
    block: int = 20  # reference iterations between objective checkpoints


class MapObjective:
    """The MAP objective per pair of ``fit(k, router='prompt')`` at its defaults, written directly in torch: for heads
    W (K, d) and the router's one-hidden-layer net on the standardised prompt z,
    J = [−Σ_i log Σ_k π_k(z_i) σ(w_kᵀΔ_i) − α Σ_i H(π(z_i)) + ‖W‖²/2σ² + ‖router weights‖²/2σ_r²] / n
    (α = 0.5, σ = 1, σ_r = 0.3; constants dropped)."""

    def __init__(self, train: EmbeddedPairs, alpha: float = 0.5, prior_scale: float = 1.0,
                 router_prior_scale: float = 0.3):
        self.diff = train.diff().float()
        prompt = train.prompt.float()
        self.mean, self.scale = prompt.mean(0), prompt.std(0).clamp_min(1e-6)
        self.z = (prompt - self.mean) / self.scale
        self.alpha, self.prior_scale, self.router_prior_scale = alpha, prior_scale, router_prior_scale

    def __call__(self, heads: torch.Tensor, router: nn.Module) -> torch.Tensor:
        log_pi = torch.log_softmax(router(self.z), -1)
        log_lik = torch.logsumexp(log_pi + F.logsigmoid(self.diff @ heads.T), -1)
        entropy = -(log_pi.exp() * log_pi).sum(-1)
        prior = heads.pow(2).sum() / (2 * self.prior_scale ** 2) + \
            sum(p.pow(2).sum() for p in router.parameters()) / (2 * self.router_prior_scale ** 2)
        return (prior - log_lik.sum() - self.alpha * entropy.sum()) / self.diff.shape[0]

    def of_fit(self, fitted) -> float:
        """J at a ``Fit``'s MAP: its heads and its router (whose standardisation folds in the same z)."""
        router = nn.Sequential(nn.Linear(self.z.shape[1], fitted.config.hidden), nn.ReLU(),
                               nn.Linear(fitted.config.hidden, fitted.config.k))
        router.load_state_dict({key[len("net."):]: value for key, value in fitted.router_state.items()
                                if key.startswith("net.")})
        with torch.no_grad():
            return float(self(fitted.heads[0].float(), router))


def reference_lbfgs(objective: MapObjective, k: int, seed: int, iterations: int, block: int,
                    ) -> list[dict[str, Any]]:
    """The plain-PyTorch reference: ``torch.optim.LBFGS`` (strong Wolfe, history 20) on ``objective`` from a random
    start (heads with margin sd ≈ 0.5, torch's default router initialisation); a checkpoint of (seconds, objective,
    the parameters) every ``block`` iterations, ``iterations`` in all, stopped early where the objective stops moving."""
    torch.manual_seed(seed)
    d = objective.diff.shape[1]
    router = nn.Sequential(nn.Linear(objective.z.shape[1], 128), nn.ReLU(), nn.Linear(128, k))
    rms = float(objective.diff.pow(2).sum(-1).mean().sqrt())
    heads = (torch.randn(k, d) * 0.5 / rms).requires_grad_()
    params = [heads, *router.parameters()]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=block, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective(heads, router)
        loss.backward()
        return loss

    checkpoints, start, done = [], time.perf_counter(), 0
    while done < iterations:
        opt.step(closure)
        done += block
        with torch.no_grad():
            value = float(objective(heads, router))
        checkpoints.append({"seconds": time.perf_counter() - start, "iterations": done, "objective": value,
                            "heads": heads.detach().clone(), "router": {k_: v.clone() for k_, v in
                                                                       router.state_dict().items()}})
        if len(checkpoints) > 1 and checkpoints[-2]["objective"] - value <= 1e-9:
            break
    return checkpoints


def time_to_optimum(spec: OptimumSpec = OptimumSpec(), seed: int = 0) -> dict[str, Any]:
    """Seconds for the plain-PyTorch reference and for bayesmicro's default fit to reach within ``spec.within`` of the
    best training objective either reaches (the reference's long run included), with the held-out NLL there."""
    torch.set_num_threads(spec.threads)
    data, _ = make_features(spec, seed)
    train, test = data.part("train"), data.part("test")
    objective = MapObjective(train)
    checkpoints = reference_lbfgs(objective, spec.k, seed, spec.long_iterations, spec.block)
    start = time.perf_counter()
    ours = fit(data, k=spec.k, router="prompt", seed=seed, restarts=1)
    ours_seconds = time.perf_counter() - start
    ours_objective = objective.of_fit(ours)
    best = min(ours_objective, min(c["objective"] for c in checkpoints))
    reached = next((c for c in checkpoints if c["objective"] <= best + spec.within), None)
    reference = {"seconds": None if reached is None else reached["seconds"],
                 "iterations": None if reached is None else reached["iterations"],
                 "objective": None if reached is None else reached["objective"],
                 "final_objective": checkpoints[-1]["objective"], "run_seconds": checkpoints[-1]["seconds"]}
    if reached is not None:
        model = nn.Sequential(nn.Linear(objective.z.shape[1], 128), nn.ReLU(), nn.Linear(128, spec.k))
        model.load_state_dict(reached["router"])
        with torch.no_grad():
            z = (test.prompt.float() - objective.mean) / objective.scale
            log_prob = torch.logsumexp(torch.log_softmax(model(z), -1) + F.logsigmoid(test.diff().float() @
                                                                                     reached["heads"].T), -1)
            prob = log_prob.clamp_max(0.0).exp()  # rounding can put a log-probability a few ulps above 0
        reference["held_out_nll"] = score(prob)["nll"]
    at_optimum = ours_objective <= best + spec.within
    bayesmicro = {"seconds": ours_seconds if at_optimum else None, "objective": ours_objective,
                  "fit_seconds": ours_seconds, "held_out_nll": score(ours.predict_proba(test))["nll"],
                  "iterations": ours.summary.get("iterations"), "converged": ours.summary.get("converged")}
    ratio = (bayesmicro["seconds"] / reference["seconds"]
             if bayesmicro["seconds"] is not None and reference["seconds"] else None)
    log(f"speed: time to optimum (within {spec.within} of {best:.5f}): reference "
        f"{reference['seconds']} s, bayesmicro {bayesmicro['seconds']} s")
    return {"spec": asdict(spec), "best_objective": best, "reference": reference, "bayesmicro": bayesmicro,
            "time_ratio": ratio, "target": "bayesmicro at the optimum in ≤ 1.5× the reference's time",
            "target_met": ratio is not None and ratio <= 1.5}


def _optimum_section(result: dict[str, Any]) -> str:
    spec = result["spec"]
    rows = [{"method": name, "seconds to optimum": result[name]["seconds"], "objective": result[name]["objective"],
             "held-out NLL": result[name].get("held_out_nll")} for name in ("reference", "bayesmicro")]
    ratio = result["time_ratio"]
    return (f"{spec['n_pairs']:,} pairs, d = {spec['dim']}, K = {spec['k']}, {spec['threads']} torch thread(s). "
            f"Optimum: training objective per pair within {spec['within']} of the best any run reached "
            f"({result['best_objective']:.5f}). Reference: plain-PyTorch full-batch L-BFGS on the same MAP objective; "
            f"bayesmicro: `fit(k={spec['k']}, router='prompt', restarts=1)` at its defaults (its whole fit time). "
            f"Time ratio: **{'not reached' if ratio is None else f'{ratio:.2f}'}** (target ≤ 1.5).\n\n"
            + markdown_table(rows, ["method", "seconds to optimum", "objective", "held-out NLL"]))


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/speed", spec: SpeedSpec = SpeedSpec(),
        schedule: Schedule | None = None, restarts: int = 1, device: str = "auto", embed: bool = True,
        embed_texts: int | None = None, embed_size: str = "auto", optimum: OptimumSpec | None = OptimumSpec(),
        **_: Any) -> dict[str, Any]:
    """Per seed: build the features once, then time the paper recipe and ``bayesmicro.fit(k, router='prompt')`` (its
    default ``Schedule``, ``restarts`` restarts; the recipe is one run) on the same training pairs in the same process;
    score both on the same held-out pairs. Then (``optimum``, None: skipped) the time each of bayesmicro and a plain-PyTorch L-BFGS
    needs to reach the optimum of the same MAP objective (``time_to_optimum``), and (``embed``) the embedding throughput on ``device`` (``embed_texts``
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
            "bayesmicro": {"seconds": ours_seconds, "nll": ours_score["nll"], "accuracy": ours_score["accuracy"],
                           **{key: ours.summary["restarts"][0][key] for key in ("optimizer", "iterations",
                                                                                "converged")}},
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
    used, first = schedule or Schedule(), per_seed[0]["bayesmicro"]
    n_train = int((data.split == "train").sum())
    optimiser = (f"AdamW, batch {used.batch_size}, lr {used.lr:g}, {first['iterations']} epochs by the work budget"
                 if first["optimizer"] == Optimizer.ADAM else
                 f"full-batch L-BFGS, {first['iterations']} iterations, converged: {first['converged']}")
    how = (f"bayesmicro: `bayesmicro.fit(k={spec.k}, router='prompt')` with its default schedule ({optimiser}), "
           f"{restarts} restart(s); paper: "
           f"AdamW lr 2e-3, batch 32, one epoch, 5 % warm-up, α = 0.5. Both timings include taking the training "
           f"split from the same in-memory features.")
    text = (f"{spec.n_pairs:,} pairs ({n_train:,} train), d = {spec.dim:,}, "
            f"K = {spec.k}, {spec.threads} torch thread(s). {how} Time ratio bayesmicro / paper recipe: "
            f"**{ratio['mean']:.2f}** (target ≤ 1.5 with NLL no worse: {'met' if target_met else 'not met'}).\n\n{table}")
    sections = [("Stage-1 fit: bayesmicro vs the paper's recipe", text)]
    if optimum is not None:
        results["time_to_optimum"] = time_to_optimum(optimum, seed=0)
        sections.append(("Time to the optimum: bayesmicro vs a plain-PyTorch L-BFGS on the same objective",
                         _optimum_section(results["time_to_optimum"])))
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
