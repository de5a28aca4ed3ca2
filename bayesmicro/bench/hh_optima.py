"""hh: which stage-1 optimum stage 2 needs to reach the per-subset oracle, and why the restarts do not find it.

    bayesmicro bench hh_optima --seeds 5 --json   (8 restarts; ~40 min on 2 CPU cores)

Same embedded HH-RLHF pairs, 80/20 splits, stage-1 recipe (``micro_stage1_smooth``: K = 2, prompt router, α = 0,
router prior sd 0.1) and B = 50 labelled training pairs per subset as ``bayesmicro bench hh``. Per seed, stage-1
MAP optima reached from

- ``restarts``: the library's random restarts (seeds seed·1000 + r, as ``fit(restarts=R)``, which keeps the one with
  the best training log-likelihood);
- ``subset_start``: the router first trained to predict each training pair's subset from its prompt (labels stage 1
  never sees) and the per-subset BTs as heads — where stage 1 would have to end up;
- ``split_start``: unsupervised, the router first trained to predict where the single BT errs (soft targets 1 − p_i)
  and the BTs of those two soft groups as heads;

each with its MAP loss per pair, training log-likelihood, Laplace evidence (``mode_log_evidence``), held-out NLL,
the router's agreement with the subsets on held-out pairs, and held-out accuracy after ``posterior`` / ``hyre``
routing at B = 50; plus ``logit`` routing (per subset, a Bayesian logistic regression on the K head margins, prior
at the router's mean weights with sd 0.5 or 1) on the optimum ``fit(restarts=2)`` keeps. ``summary``: mean over
seeds per choice of optimum. One torch thread; ~8 minutes per seed with 8 restarts on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value

from bayesmicro.bench.hh import HEADLINE_BUDGET, STAGE1_RECIPES, STAGE2_BASE, subset_scores
from bayesmicro.bench.hh_seeds import run_seeds
from bayesmicro.bench.report import json_block, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.infer.api import fit
from bayesmicro.infer.vi.laplace import mode_log_evidence
from bayesmicro.infer.map import Schedule, run_lbfgs, fit_map_once, per_pair_loss
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.routing import budget_subset, route_predict

RECIPE = STAGE1_RECIPES[STAGE2_BASE]
PRETRAIN_STEPS = 300  # Adam steps of the router on its start targets


def describe(optimum: Fit, loss: float, train: EmbeddedPairs, test: EmbeddedPairs, labelled: EmbeddedPairs,
             seed: int) -> dict:
    config = optimum.config
    diff, router_x = train.diff(), config.router_input(train)
    model = optimum.mode_model()
    subsets = sorted(set(test.group.tolist()))
    agree = float(np.mean(optimum.log_weights(test).argmax(1).numpy() == np.searchsorted(subsets, test.group)))
    row = {"loss_per_pair": loss, "train_loglik": float(optimum.log_lik_from(diff, router_x).sum()),
           "log_evidence": mode_log_evidence(model, optimum.heads[0], diff, router_x),
           "test_nll": float(-optimum.predict_proba(test).log().mean()),
           "router_subset_agreement": max(agree, 1 - agree)}
    for method in ("posterior", "hyre"):
        prob = route_predict(optimum, labelled, test, method, seed=seed, by="group")
        row[method] = {g: v["accuracy"] for g, v in subset_scores(prob, test.group).items()}
    return row


def fit_from(config, train: EmbeddedPairs, targets: torch.Tensor, heads: torch.Tensor, seed: int) -> tuple[Fit, float]:
    """The stage-1 MAP started with the router trained on soft ``targets`` (n, K) and at ``heads`` (K, d)."""
    diff, router_x = train.diff(), config.router_input(train)
    model = config.build_model()
    model.router.standardize_from(router_x)
    opt = torch.optim.Adam(model.router.net.parameters(), lr=1e-2)
    for _ in range(PRETRAIN_STEPS):
        opt.zero_grad()
        cross_entropy = -(targets * model.router.log_weights(router_x, len(train))).sum(1).mean()
        (cross_entropy - model.router.log_prior(RECIPE["router_prior_scale"]) / len(train)).backward()
        opt.step()
    pyro.set_rng_seed(seed)
    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"heads": heads.clone()}))
    elbo = Trace_ELBO()(model, guide)
    loss_on = per_pair_loss(elbo, diff, router_x)
    loss = run_lbfgs([p for p in elbo.parameters() if p.requires_grad], lambda: loss_on(None), Schedule(), None).objective
    router_state = {k: v.detach().clone() for k, v in model.router.state_dict().items()}
    return Fit(config, guide.median()["heads"].detach().clone().unsqueeze(0), router_state), loss


def weighted_bt(diff: torch.Tensor, weight: torch.Tensor, prior_scale: float = 1.0) -> torch.Tensor:
    """(d,) MAP of Σ_i weight_i log σ(βᵀΔ_i) + N(0, prior_scale²) prior."""
    beta = torch.zeros(diff.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(weight * torch.nn.functional.logsigmoid(diff @ beta)).sum() + 0.5 * beta.pow(2).sum() / prior_scale**2
        loss.backward()
        return loss

    opt.step(closure)
    return beta.detach()


def logit_route(stage1: Fit, labelled: EmbeddedPairs, test: EmbeddedPairs, prior_sd: float) -> torch.Tensor:
    """(n_test,) σ(Σ_k β_k Δ_k) with β per subset the MAP of a logistic regression on the labelled head margins."""
    prob = torch.zeros(len(test))
    for g in sorted(set(test.group.tolist())):
        own = labelled.subset(np.flatnonzero(labelled.group == g))
        rows = np.flatnonzero(test.group == g)
        margins = stage1.margins(own).double().mean(0)
        prior = stage1.log_weights(own).double().exp().mean(0)
        beta = prior.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([beta], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (-torch.nn.functional.logsigmoid(margins @ beta).sum()
                    + 0.5 * (beta - prior).pow(2).sum() / prior_sd**2)
            loss.backward()
            return loss

        opt.step(closure)
        prob[torch.from_numpy(rows)] = torch.sigmoid(stage1.margins(test.subset(rows)).double().mean(0)
                                                     @ beta.detach()).float()
    return prob


def run_seed(data: EmbeddedPairs, seed: int, restarts: int) -> dict:
    split = data.with_split(0.2, seed)
    train, test = split.part("train"), split.part("test")
    labelled = budget_subset(train, HEADLINE_BUDGET, seed=seed, by="group")
    kept = fit(split, seed=seed, restarts=2, k=2, router="prompt", **RECIPE)
    config = kept.config
    diff, router_x = train.diff(), config.router_input(train)
    out: dict = {"restarts": []}
    for r in range(restarts):
        model = config.build_model()
        heads, info = fit_map_once(model, diff, router_x, seed * 1000 + r, Schedule())
        loss = info.objective
        optimum = Fit(config, heads.unsqueeze(0), {k: v.detach().clone() for k, v in model.router.state_dict().items()})
        out["restarts"].append(describe(optimum, loss, train, test, labelled, seed))
    subsets = sorted(set(train.group.tolist()))
    subset_heads = torch.stack([fit(split.subset(np.flatnonzero(split.group == g)), k=1, router="none",
                                    seed=seed).heads[0, 0] for g in subsets])
    own_subset = torch.nn.functional.one_hot(torch.from_numpy(np.searchsorted(subsets, train.group)), 2).float()
    out["subset_start"] = describe(*fit_from(config, train, own_subset, subset_heads, seed), train, test, labelled,
                                   seed)
    single_right = fit(split, k=1, router="none", seed=seed).predict_proba(train).float()
    soft = torch.stack([single_right, 1 - single_right], 1)
    split_heads = torch.stack([weighted_bt(diff.float(), soft[:, j]) for j in range(2)])
    out["split_start"] = describe(*fit_from(config, train, soft, split_heads, seed), train, test, labelled, seed)
    out["logit"] = {str(sd): {g: v["accuracy"] for g, v in
                              subset_scores(logit_route(kept, labelled, test, sd), test.group).items()}
                    for sd in (0.5, 1.0)}
    return out


def summarise(by_seed: dict[str, dict], restarts: int) -> dict:
    """Mean over seeds of the B = 50 accuracies (and held-out NLL) per choice of stage-1 optimum."""
    def best(rows, key):
        return max(rows, key=lambda row: row[key])

    choices = {"train_loglik of 2 restarts": lambda s: best(s["restarts"][:2], "train_loglik"),
               f"train_loglik of {restarts} restarts": lambda s: best(s["restarts"], "train_loglik"),
               f"log_evidence of {restarts} restarts": lambda s: best(s["restarts"], "log_evidence"),
               "subset_start": lambda s: s["subset_start"], "split_start": lambda s: s["split_start"]}
    out = {}
    for name, choose in choices.items():
        rows = [choose(s) for s in by_seed.values()]
        out[name] = {"test_nll": float(np.mean([row["test_nll"] for row in rows]))}
        for method in ("posterior", "hyre"):
            out[name][method] = {g: float(np.mean([row[method][g] for row in rows])) for g in rows[0][method]}
    subsets = next(iter(by_seed.values()))["logit"]["0.5"]
    for sd in ("0.5", "1.0"):
        out[f"logit (sd {sd}) on train_loglik of 2 restarts"] = {
            g: float(np.mean([s["logit"][sd][g] for s in by_seed.values()])) for g in subsets}
    return out


def run(seeds: int = 5, out_dir=None, restarts: int = 8) -> dict:
    """Seeds 0 … seeds−1 with ``restarts`` stage-1 restarts each, one torch thread."""
    by_seed = run_seeds(run_seed, list(range(seeds)), restarts)
    results = {"summary": summarise(by_seed, restarts), "by_seed": by_seed, "seeds": list(range(seeds)), "restarts": restarts}
    return write_suite(out_dir, "hh_optima", results, [("Summary over seeds", json_block(results["summary"]))])
