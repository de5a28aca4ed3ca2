"""The paper's per-attribute protocols end to end (``helpsteer2``, ``rpr``): text → features → stage 1 →
stage 2 → the per-attribute accuracy table of the paper's Tables 2 and 3.

1. Pairs from the protocol loader (``bayesmicro.data.protocols``: a hub id or a local file/folder in the hub's
   layout), each with its attribute/category (``group``), criterion sentence (``context``) and the dataset's own
   train/test split; embedded with ``bayesmicro.embed.Embedder`` through its disk cache (h(x, a) at the last token,
   e(x) at the prompt/assistant boundary, the criterion embedded as plain text).
2. Stage 1 on the training split: ``single_bt`` (K = 1), ``static_mixture`` (K heads, fixed weights) and
   ``micro_stage1`` (K heads, router on the prompt, α = 0.5: the paper's stage 1), ``bayesmicro.fit``.
3. Stage 2 on the frozen ``micro_stage1`` heads with the criterion as context, from B labelled training pairs per
   attribute (``bayesmicro.routing.route_predict``): ``hedge`` (paper Algorithm 1, τ per dataset), ``hyre`` and
   ``posterior`` (bayesmicro's Bayesian posterior over the attribute's mixture weights), for every B of ``budgets``.
4. Held-out accuracy per attribute and their unweighted mean ("average", as the paper averages attributes); the
   paper's averages beside ours where ``design.md`` records them.

Seeds change the fits' initialisation and which B pairs are labelled; the split is the dataset's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro.bench.report import budget_curve_figure, log, markdown_table, mean_sd, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.protocols import load_protocol
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import accuracy, nll
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.routing import budget_subset, route_predict

PAPER_BACKBONE = "Ray2333/GRM-Llama3.2-3B-rewardmodel-ft"  # the paper's 3B feature extractor (GRM-Llama3.2-3B)
BUDGETS = (10, 25, 50, 100)
HEADLINE_BUDGET = 50  # the paper's B
ROUTING = ("hedge", "hyre", "posterior")
STAGE1 = ("single_bt", "static_mixture", "micro_stage1")
# table rows: (key, label); the stage-2 rows are at the headline budget
ROWS = (("single_bt", "single BT"), ("static_mixture", "static mixture"), ("micro_stage1", "MiCRo stage 1"),
        ("hedge", "MiCRo + Hedge"), ("hyre", "MiCRo + HyRe"), ("posterior", "bayesmicro posterior"))
WIDE_TABLE_MAX_GROUPS = 8  # more attributes than this: one row per attribute instead of one column


@dataclass(frozen=True)
class ProtocolSuite:
    """What differs between the per-attribute suites: the protocol, Hedge's τ and the paper's numbers.

    ``paper``: row key → the paper's average accuracy (3B backbone), for the rows design.md gives."""

    name: str
    protocol: str
    tau: float
    table: str
    paper: dict[str, float] = field(default_factory=dict)
    paper_note: str = ""
    unit: str = "attribute"  # what a group is called in the tables, singular and plural
    units: str = "attributes"


def embed_protocol(suite: ProtocolSuite, data: str | None = None, *, limit: int | None = None,
                   backbone: str | None = PAPER_BACKBONE, device: str = "auto", cache_dir: str | None = None,
                   batch_size: int = 32, max_length: int = 512) -> tuple[EmbeddedPairs, dict[str, Any]]:
    """The protocol's pairs (``data``: hub id or local path; None = the protocol's hub id) embedded through the cached
    ``Embedder``; plus stats (seconds, pairs, cache hits, embedding settings)."""
    from bayesmicro.embed import Embedder

    start = time.perf_counter()
    pairs = load_protocol(suite.protocol, data, limit=limit)
    check_labels({key: pairs.has(key) for key in ("group", "context", "split")},
                 set(pairs["split"]) if pairs.has("split") else set(), pairs.source)  # before the costly part
    embedder = Embedder(model=backbone, device=device, cache_dir=cache_dir, batch_size=batch_size,
                        max_length=max_length)
    embedded = embedder.embed_pairs(pairs)
    stats = {"seconds": time.perf_counter() - start, "pairs": len(pairs), "source": pairs.source,
             "cache_dir": str(embedder.cache.folder), "cache_hits": embedder.last_stats.get("cache_hits"),
             "computed": embedder.last_stats.get("computed"), "device": embedder.last_stats.get("device"),
             "embedding": embedder.settings()}
    return embedded, stats


def check_labels(present: dict[str, bool], splits: set[str], source: str) -> None:
    """BadInput unless every pair has a group, a context and a split, and both a train and a test split exist.
    ``present``: {label: whether the pairs carry it}; ``splits``: the split values found."""
    for key, there in present.items():
        if not there:
            raise BadInput(f"the per-attribute suites need a '{key}' for every pair", source=source)
    if not {"train", "test"} <= splits:
        raise BadInput(f"the per-attribute suites need both a train and a test split (found {sorted(splits)})",
                       source=source)


def check_settings(k: int, budgets: tuple[int, ...]) -> None:
    """BadInput unless K ≥ 2 and every budget ≥ 1 (checked before any loading or embedding)."""
    if k < 2:
        raise BadInput(f"--k must be ≥ 2 for a mixture, got {k}")
    if not budgets or min(budgets) < 1:
        raise BadInput(f"--budgets must be positive integers, got {list(budgets)}")


def group_accuracy(prob: torch.Tensor, group: np.ndarray) -> dict[str, float]:
    """{attribute: accuracy} on held-out pairs, "average" = unweighted mean over attributes (the paper's), "all" =
    pooled over pairs, "nll" = pooled NLL. prob, group: (n,)."""
    groups = sorted(set(group.tolist()))
    out = {g: accuracy(prob[torch.from_numpy(group == g)]) for g in groups}
    out["average"] = float(np.mean([out[g] for g in groups]))
    out["all"] = accuracy(prob)
    out["nll"] = nll(prob.clamp(1e-12, 1.0))
    return out


def fit_stage1(data: EmbeddedPairs, seed: int, k: int, restarts: int) -> tuple[dict[str, Fit], dict[str, float]]:
    """The three stage-1 fits on the training split: ({name: Fit}, {name: seconds})."""
    plans = {"single_bt": dict(k=1, router="none"), "static_mixture": dict(k=k, router="none"),
             "micro_stage1": dict(k=k, router="prompt", alpha=0.5)}
    fits, seconds = {}, {}
    for name, kw in plans.items():
        start = time.perf_counter()
        fits[name] = fit(data, seed=seed, restarts=restarts, **kw)
        seconds[name] = time.perf_counter() - start
        log(f"{data.source}: seed {seed} {name} in {seconds[name]:.1f} s")
    return fits, seconds


def run_seed(data: EmbeddedPairs, seed: int, *, k: int, budgets: tuple[int, ...], tau: float,
             restarts: int) -> dict[str, Any]:
    """Every method on the dataset's split: {"metrics": {stage-1 name: group_accuracy},
    "stage2": {method: {str(B): group_accuracy + seconds}}}."""
    train, test = data.part("train"), data.part("test")
    fits, seconds = fit_stage1(data, seed, k, restarts)
    out: dict[str, Any] = {"seed": seed, "seconds": seconds, "stage2": {m: {} for m in ROUTING},
                           "metrics": {name: group_accuracy(f.predict_proba(test), test.group)
                                       for name, f in fits.items()}}
    for b in budgets:
        labelled = budget_subset(train, b, seed=seed, by="group")
        for method in ROUTING:
            start = time.perf_counter()
            prob = route_predict(fits["micro_stage1"], labelled, test, method, tau=tau, seed=seed, by="group")
            out["stage2"][method][str(b)] = {**group_accuracy(prob, test.group),
                                             "seconds": time.perf_counter() - start}
    return out


def summarise(per_seed: list[dict[str, Any]], budgets: tuple[int, ...]) -> dict[str, Any]:
    """mean ± sd over seeds of every (method, attribute) accuracy, stage 1 and stage 2 at every budget."""
    keys = [key for key in per_seed[0]["metrics"]["single_bt"]]

    def agg(get) -> dict[str, dict[str, float]]:
        return {key: mean_sd([get(s)[key] for s in per_seed]) for key in keys}

    stage1 = {name: agg(lambda s, name=name: s["metrics"][name]) for name in STAGE1}
    stage2 = {m: {str(b): agg(lambda s, m=m, b=b: s["stage2"][m][str(b)]) for b in budgets} for m in ROUTING}
    return {"groups": [key for key in keys if key not in ("average", "all", "nll")], "stage1": stage1,
            "stage2": stage2}


def headline(budgets: tuple[int, ...]) -> int:
    """The budget of the table's stage-2 rows: the paper's B = 50 when run, else the largest."""
    return HEADLINE_BUDGET if HEADLINE_BUDGET in budgets else max(budgets)


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per ``ROWS`` method: label, every attribute's accuracy, average, and the paper's average."""
    b = str(results["headline_budget"])
    rows = []
    for key, label in ROWS:
        cells = results["stage1"][key] if key in STAGE1 else results["stage2"][key][b]
        name = label if key in STAGE1 else f"{label} (B={b})"
        rows.append({"method": name, **cells, "paper (3B)": results["paper"].get(key)})
    return rows


def run_protocol(suite: ProtocolSuite, seeds: int, out_dir: Path | str, *, data: str | None = None,
                 embedded: EmbeddedPairs | None = None, limit: int | None = None,
                 backbone: str | None = PAPER_BACKBONE, device: str = "auto", cache_dir: str | None = None,
                 k: int = 10, budgets: tuple[int, ...] = BUDGETS, restarts: int = 2) -> dict[str, Any]:
    """Embed (or take ``embedded``), run every method for ``seeds`` seeds and write the suite's files."""
    budgets = tuple(sorted(set(int(b) for b in budgets)))
    check_settings(k, budgets)
    start = time.perf_counter()
    if embedded is None:
        embedded, embed_stats = embed_protocol(suite, data, limit=limit, backbone=backbone, device=device,
                                               cache_dir=cache_dir)
        log(f"{suite.name}: embedded {embed_stats['pairs']} pairs in {embed_stats['seconds']:.1f} s "
            f"({embed_stats['cache_hits']} texts from the cache, {embed_stats['computed']} computed)")
    else:
        embed_stats = {"seconds": 0.0, "pairs": len(embedded), "source": embedded.source,
                       "embedding": embedded.meta.get("embedding")}
    check_labels({key: getattr(embedded, key) is not None for key in ("group", "context", "split")},
                 set(embedded.split.tolist()) if embedded.split is not None else set(), embedded.source)
    torch.set_num_threads(1)  # after embedding (torch's default threads); the fits are small
    per_seed = [run_seed(embedded, seed, k=k, budgets=budgets, tau=suite.tau, restarts=restarts)
                for seed in range(seeds)]
    results = {"seeds": list(range(seeds)), "protocol": suite.protocol, "k": k, "budgets": list(budgets),
               "headline_budget": headline(budgets), "hedge_tau": suite.tau, "restarts": restarts,
               "pairs": {split: int((embedded.split == split).sum()) for split in ("train", "test")},
               "embedding": embed_stats, "paper": dict(suite.paper), **summarise(per_seed, budgets),
               "per_seed": per_seed}
    results["seconds"] = time.perf_counter() - start
    return write_suite(out_dir, suite.name, results, sections(suite, results),
                       {"budget_curves": figure(results, suite.unit, suite.units)})


def sections(suite: ProtocolSuite, results: dict[str, Any]) -> list[tuple[str, str]]:
    """The Markdown: the Tables 2/3 layout (rows = methods, columns = attributes + average) and the budget curves."""
    groups, b = results["groups"], results["headline_budget"]
    emb = results["embedding"].get("embedding") or {}
    how = (f"embedded with `{emb['model']}` ({emb['pooling']} pooling)" if emb.get("model")
           else "given as features")
    intro = (f"{results['pairs']['train']:,} training / {results['pairs']['test']:,} test pairs from "
             f"`{results['embedding'].get('source')}`, {how}; K = {results['k']}; stage 2 from B labelled training "
             f"pairs per {suite.unit} with the criterion as context, Hedge τ = {suite.tau:g}; held-out accuracy, mean "
             f"± sd over {len(results['seeds'])} seed(s) (fit initialisation and labelled pairs; the split is the "
             f"dataset's). `average` is the unweighted mean over {suite.units}. The paper used GRM-Llama3.2-3B "
             f"features (`{PAPER_BACKBONE}`); `paper (3B)` is its average where recorded{suite.paper_note}.")
    rows = table_rows(results)
    if len(groups) <= WIDE_TABLE_MAX_GROUPS:
        main = markdown_table(rows, ["method", *groups, "average", "paper (3B)"])
    else:
        main = markdown_table(rows, ["method", "average", "paper (3B)"]) + "\n\n" + markdown_table(
            [{suite.unit: g, **{row["method"]: row[g] for row in rows}} for g in groups],
            [suite.unit, *(row["method"] for row in rows)])
    curve = [{"method": m, **{f"B={x}": results["stage2"][m][str(x)]["average"] for x in results["budgets"]}}
             for m in ROUTING]
    return [(f"{suite.table}: accuracy per {suite.unit} (stage 2 at B = {b})", intro + "\n\n" + main),
            ("Stage 2 budget curves: average accuracy vs B",
             markdown_table(curve, ["method", *(f"B={x}" for x in results["budgets"])]))]


def figure(results: dict[str, Any], unit: str = "attribute", units: str = "attributes"):
    """Average accuracy vs B for every stage-2 method, with the stage-1 and single-BT levels."""
    budgets = results["budgets"]
    curves = {method: tuple(np.array([curve[str(b)]["average"][stat] for b in budgets]) for stat in ("mean", "sd"))
              for method, curve in results["stage2"].items()}
    levels = [(name, results["stage1"][name]["average"]["mean"])
              for name in ("micro_stage1", "static_mixture", "single_bt")]
    return budget_curve_figure(budgets, curves, levels, f"labelled pairs per {unit} (B)",
                               f"held-out accuracy (average over {units})")


__all__ = ["BUDGETS", "PAPER_BACKBONE", "ProtocolSuite", "ROUTING", "ROWS", "check_labels", "check_settings",
           "embed_protocol", "group_accuracy", "run_protocol", "run_seed", "summarise", "table_rows"]
