"""``ukp``: real annotators (UKPConvArg1 per-annotator judgments), single BT beside bayesmicro, four protocols.

Data: a JSONL/CSV/Parquet table with ``prompt``, ``chosen``, ``rejected``, ``user``, ``topic`` and ``pair_id`` (one
row per judgment; the shared file is half of UKPConvArg1's debates), embedded with the offline backbone through the
cached ``Embedder``. Per-annotator metrics are the mean over annotators of each one's accuracy / NLL.

- ``population``: annotators with < 100 judgments, 80/20 split by ``pair_id`` (a comparison never on both sides);
  single BT (``fit(k=1)``) and bayesmicro's default fit (``fit()``: capacity chosen on the training pairs).
- ``new_users``: annotators with ≥ 100 judgments, unseen by stage 1 (the ``population`` fits). A fixed random 25 %
  of each one's judgments is their test set; B ∈ ``budgets`` labels drawn from the rest personalize the hierarchical
  model (``routing.hierarchical``: offsets with empirical-Bayes scales from stage 1's training annotators).
- ``seen_users``: every judgment split 80/20 by ``pair_id``; stage 1 and the offset scales from the training
  judgments, then the population and every annotator's offsets fitted jointly on them (``fit_jointly``); metrics on
  annotators with ≥ 100 judgments (``population``: stage 1 alone).
- ``crowdgppl``: Simpson & Gurevych (2020), Table 3: the first judgment of each argument pair in file order,
  leave-one-topic-out folds; personal metrics (accuracy and cross-entropy, CEE) on annotators seen in training with
  ≥ 2 test labels (mean over annotators, then folds), also for annotators with > 50 training pairs, and consensus
  (the majority label of each test pair over all its judgments; ties left out) predicted by stage 1. bayesmicro
  chooses capacity on held-out training topics (``validate_by="group"``), as the protocol tests unseen topics.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro.bench.report import log, markdown_table, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from bayesmicro.infer.capacity import CapacityGrid
from bayesmicro.routing.hierarchical import adapt, estimate_scales, fit_jointly

DEFAULT_DATA = Path("..") / "shared" / "data" / "ukp_convarg1_judgments.jsonl.gz"
REQUIRED = ("prompt", "chosen", "rejected", "user", "topic", "pair_id")
HEAVY = 100  # judgments that make an annotator "heavy" (new_users, seen_users)
BUDGETS = (5, 20, 50)
NEW_USER_TEST = 0.25
TEST_FRACTION = 0.2
OVER = 50  # crowdgppl: annotators with more than this many training pairs
PUBLISHED = {  # Simpson & Gurevych 2020, Table 3 (UKPConvArg1, all 32 topic folds): accuracy / CEE
    "GPPL": {"personal_all": (0.71, 0.56), "personal_over50": (0.72, 0.55), "consensus": (0.77, 0.51)},
    "crowdGPPL": {"personal_all": (0.72, 0.58), "personal_over50": (0.74, 0.55), "consensus": (0.79, 0.52)},
    "crowdBT-GP": {"personal_all": (0.69, 0.58), "personal_over50": (0.71, 0.56)},
}


KS = (1, 2, 3, 4)  # the K stage 1 chooses among, as when the committed results were measured (fit's default: 1..5)


def read_judgments(data: str | Path) -> dict[str, np.ndarray]:
    """The table's columns as arrays (one row per judgment); BadInput naming the file and a missing column."""
    from bayesmicro.data.pairs import read_table

    table = read_table(str(data))
    missing = [key for key in REQUIRED if key not in table.column_names]
    if missing:
        raise BadInput(f"missing column(s) {missing}; the ukp suite needs {list(REQUIRED)} "
                       f"(found {table.column_names})", source=str(data))
    if len(table) == 0:
        raise BadInput("no judgments in the file", source=str(data))
    return {key: np.asarray(table[key], dtype=object if key in ("prompt", "chosen", "rejected") else str)
            for key in REQUIRED}


def embed_judgments(columns: dict[str, np.ndarray], source: str, cache_dir: str | None = None,
                    model: str | None = None) -> EmbeddedPairs:
    """Embedded pairs with ``user`` = annotator and ``group`` = topic, through the cached ``Embedder``."""
    from bayesmicro.data.pairs import PreferencePairs
    from bayesmicro.embed import Embedder

    pairs = PreferencePairs.from_dict({key: columns[key].tolist() for key in ("prompt", "chosen", "rejected")}
                                      | {"user": columns["user"].tolist(), "group": columns["topic"].tolist()},
                                      source=source)
    return Embedder(model=model, cache_dir=cache_dir).embed_pairs(pairs)


def split_by_pair(pair_id: np.ndarray, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                          np.ndarray]:
    """(train rows, test rows) of ``rows``: a seeded ``fraction`` of their distinct pair ids is held out whole."""
    ids = np.unique(pair_id[rows])
    held = np.random.default_rng(seed).choice(ids, int(round(fraction * ids.size)), replace=False)
    test = np.isin(pair_id[rows], held)
    return rows[~test], rows[test]


def per_annotator(prob: torch.Tensor, users: np.ndarray, min_pairs: int = 1) -> dict[str, float]:
    """Mean over annotators (with ≥ ``min_pairs`` pairs) of each one's accuracy and NLL, plus the pooled figures."""
    prob = prob.double().clamp(1e-12, 1.0)
    correct, loss = (prob > 0.5).double().numpy(), (-prob.log()).numpy()
    names = [u for u, c in Counter(users.tolist()).items() if c >= min_pairs]
    rows = [users == u for u in names]
    return {"accuracy": float(np.mean([correct[r].mean() for r in rows])) if rows else float("nan"),
            "nll": float(np.mean([loss[r].mean() for r in rows])) if rows else float("nan"),
            "annotators": len(names), "pairs": int(sum(r.sum() for r in rows)),
            "pooled_accuracy": float(correct.mean()), "pooled_nll": float(loss.mean())}


def _with_split(data: EmbeddedPairs, train: np.ndarray, test: np.ndarray) -> EmbeddedPairs:
    rows = np.concatenate([train, test])
    return replace(data.subset(rows), split=np.array(["train"] * len(train) + ["test"] * len(test)))


def _timed(label: str, fn, *args, **kw):
    start = time.perf_counter()
    value = fn(*args, **kw)
    seconds = time.perf_counter() - start
    log(f"ukp: {label} in {seconds:.1f} s")
    return value, seconds


def _import_optimizers() -> None:
    """Build one throwaway optimizer: torch imports its compiler stack on the first optimizer a process creates
    (seconds), a start-up cost that would otherwise land in whichever fit is timed first."""
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])


def stage_one(pairs: EmbeddedPairs, seed: int, grid: CapacityGrid | None = None) -> dict[str, Any]:
    """Single BT and bayesmicro fitted on ``pairs``' training part, with their seconds and the EB unit scales."""
    single, single_seconds = _timed("single BT", fit, pairs, k=1, seed=seed)
    model, model_seconds = _timed("bayesmicro stage 1", fit, pairs, seed=seed, capacity=grid or CapacityGrid(ks=KS))
    scales, scale_seconds = _timed("empirical-Bayes scales", estimate_scales, model, pairs.part("train"), "user")
    log(f"ukp: stage 1 chose {model.summary['capacity']['chosen']}; unit scales head {scales.head:.4g}, "
        f"logit {scales.logit:.4g} ({scales.iterations} iterations)")
    return {"single_bt": single, "bayesmicro": model, "scales": scales,
            "seconds": {"single_bt_fit": single_seconds, "bayesmicro_fit": model_seconds, "scales": scale_seconds}}


def population(data: EmbeddedPairs, counts: dict[str, int], pair_id: np.ndarray, seed: int) -> tuple[dict, dict]:
    light = np.flatnonzero(np.array([counts[u] < HEAVY for u in data.user.tolist()]))
    train, test = split_by_pair(pair_id, light, TEST_FRACTION, seed)
    pairs = _with_split(data, train, test)
    stage1 = stage_one(pairs, seed)
    held = pairs.part("test")
    out = {name: per_annotator(stage1[name].predict_proba(held), held.user) for name in ("single_bt", "bayesmicro")}
    out["capacity"] = stage1["bayesmicro"].summary["capacity"]["chosen"]
    out["converged"] = stage1["bayesmicro"].summary.get("converged")
    out["train_pairs"], out["test_pairs"] = len(train), len(test)
    return out, stage1


def new_users(data: EmbeddedPairs, counts: dict[str, int], stage1: dict, seed: int,
              budgets: tuple[int, ...]) -> dict:
    heavy = [u for u in sorted(counts) if counts[u] >= HEAVY]
    rng = np.random.default_rng(seed)
    tests, pools = [], {}
    for user in heavy:
        rows = rng.permutation(np.flatnonzero(data.user == user))
        n_test = int(round(NEW_USER_TEST * rows.size))
        tests.append(rows[:n_test])
        pools[user] = rows[n_test:]
    held = data.subset(np.concatenate(tests))
    out = {"single_bt": per_annotator(stage1["single_bt"].predict_proba(held), held.user),
           "before": per_annotator(stage1["bayesmicro"].predict_proba(held), held.user),
           "after": {}, "annotators": len(heavy), "scales": stage1["scales"].as_dict()}
    for budget in budgets:
        labelled = data.subset(np.concatenate([rng.choice(pools[u], min(budget, pools[u].size), replace=False)
                                               for u in heavy]))
        offsets = adapt(stage1["bayesmicro"], labelled, stage1["scales"], "user")
        out["after"][str(budget)] = per_annotator(offsets.predict_proba(held).float(), held.user)
    return out


def seen_users(data: EmbeddedPairs, counts: dict[str, int], pair_id: np.ndarray, seed: int) -> dict:
    train, test = split_by_pair(pair_id, np.arange(len(data)), TEST_FRACTION, seed)
    pairs = _with_split(data, train, test)
    stage1 = stage_one(pairs, seed)
    joint, joint_seconds = _timed("joint population and offsets", fit_jointly, stage1["bayesmicro"],
                                  pairs.part("train"), stage1["scales"], "user")
    heavy_test = np.array([counts[u] >= HEAVY for u in pairs.part("test").user.tolist()])
    held = pairs.part("test").subset(np.flatnonzero(heavy_test))
    return {"single_bt": per_annotator(stage1["single_bt"].predict_proba(held), held.user),
            "population": per_annotator(stage1["bayesmicro"].predict_proba(held), held.user),
            "bayesmicro": per_annotator(joint.predict_proba(held).float(), held.user),
            "scales": stage1["scales"].as_dict(), "capacity": stage1["bayesmicro"].summary["capacity"]["chosen"],
            "joint": {**joint.fit.summary["joint"], "objective_start": joint.history[0]},
            "seconds": {**stage1["seconds"], "joint": joint_seconds}}


def crowdgppl(data: EmbeddedPairs, columns: dict[str, np.ndarray], seed: int) -> dict:
    """Leave-one-topic-out folds on the first judgment of each pair (see the module doc)."""
    first = np.sort(np.unique(columns["pair_id"], return_index=True)[1])
    majority = _majority(columns)
    agrees = np.array([-1 if pid not in majority else int(chosen == majority[pid])
                       for pid, chosen in zip(columns["pair_id"][first].tolist(), columns["chosen"][first].tolist())])
    topics = sorted(set(columns["topic"][first].tolist()))
    folds = []
    for fold, topic in enumerate(topics):
        is_test = columns["topic"][first] == topic
        pairs = _with_split(data, first[~is_test], first[is_test])
        start = time.perf_counter()
        single = fit(pairs, k=1, seed=seed)
        model = fit(pairs, seed=seed, capacity=CapacityGrid(ks=KS, validate_by="group"))
        scales = estimate_scales(model, pairs.part("train"), "user")
        offsets = adapt(model, pairs.part("train"), scales, "user")
        held = pairs.part("test")
        folds.append({"topic": topic, "chosen": model.summary["capacity"]["chosen"], "scales": scales.as_dict(),
                      "single_bt": _fold_scores(single.predict_proba(held), pairs, held, agrees[is_test]),
                      "bayesmicro": _fold_scores(offsets.predict_proba(held).float(), pairs, held, agrees[is_test],
                                                 stage1=model.predict_proba(held))})
        log(f"ukp: crowdgppl fold {fold + 1}/{len(topics)} ({topic}) in {time.perf_counter() - start:.1f} s")
    out = {name: {metric: {key: _mean_of_defined([f[name][metric][key] for f in folds])
                           for key in ("accuracy", "cee")}
                  for metric in ("personal_all", "personal_over50", "consensus")}
           for name in ("single_bt", "bayesmicro")}
    out["folds"] = folds
    out["published"] = {name: {metric: {"accuracy": v[0], "cee": v[1]} for metric, v in rows.items()}
                        for name, rows in PUBLISHED.items()}
    return out


def _mean_of_defined(values: list[float]) -> float:
    """The mean of the values that are not NaN (folds without such annotators); NaN when none is."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def _majority(columns: dict[str, np.ndarray]) -> dict[str, str]:
    """pair id → the chosen text most annotators chose (pairs whose judgments tie are left out)."""
    votes: dict[str, Counter] = {}
    for pid, chosen in zip(columns["pair_id"].tolist(), columns["chosen"].tolist()):
        votes.setdefault(pid, Counter())[chosen] += 1
    out = {}
    for pid, counter in votes.items():
        (top, n_top), *rest = counter.most_common()
        if not rest or rest[0][1] < n_top:
            out[pid] = top
    return out


def _fold_scores(prob: torch.Tensor, pairs: EmbeddedPairs, held: EmbeddedPairs, agrees: np.ndarray,
                 stage1: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """One fold's personal (all; > OVER training pairs) and consensus accuracy / CEE. ``agrees``: per test pair,
    1 when its judged winner is the majority's, 0 when not, −1 when the pair's judgments tie (left out)."""
    train_counts = Counter(pairs.part("train").user.tolist())
    test_counts = Counter(held.user.tolist())
    users = held.user

    def personal(keep) -> dict[str, float]:
        mask = np.array([keep(u) for u in users.tolist()])
        if not mask.any():
            return {"accuracy": float("nan"), "cee": float("nan"), "annotators": 0}
        scores = per_annotator(prob[torch.from_numpy(mask)], users[mask])
        return {"accuracy": scores["accuracy"], "cee": scores["nll"], "annotators": scores["annotators"]}

    def seen(user: str) -> bool:
        return train_counts[user] > 0 and test_counts[user] >= 2

    population = (prob if stage1 is None else stage1).double()
    decided = torch.from_numpy(agrees >= 0)
    majority_prob = torch.where(torch.from_numpy(agrees == 1), population, 1 - population)[decided]
    consensus = per_annotator(majority_prob, np.zeros(int(decided.sum()), dtype=str))
    return {"personal_all": personal(seen),
            "personal_over50": personal(lambda u: seen(u) and train_counts[u] > OVER),
            "consensus": {"accuracy": consensus["accuracy"], "cee": consensus["nll"], "pairs": consensus["pairs"]}}


PROTOCOLS = ("population", "new_users", "seen_users", "crowdgppl")


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/ukp", *, data: str | Path = DEFAULT_DATA,
        budgets: tuple[int, ...] = BUDGETS, cache_dir: str | None = None, model: str | None = None,
        protocols: tuple[str, ...] = PROTOCOLS) -> dict[str, Any]:
    """Embed ``data`` (cached), run ``protocols`` with seed 0 … (one seed: the splits are the protocols' own) and
    write the suite's files; returns what ``results.json`` holds."""
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise BadInput(f"unknown ukp protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    seed = 0
    columns = read_judgments(data)
    embedded, embed_seconds = _timed("embedding", embed_judgments, columns, str(data), cache_dir, model)
    torch.set_num_threads(1)
    _import_optimizers()
    counts = Counter(columns["user"].tolist())
    results: dict[str, Any] = {"data": str(data), "judgments": len(embedded), "annotators": len(counts),
                               "seeds": [seed], "seconds": {"embed": embed_seconds}}
    if "population" in protocols or "new_users" in protocols:
        (results["population"], stage1), seconds = _timed("population", population, embedded, counts,
                                                          columns["pair_id"], seed)
        results["seconds"].update(population=seconds, **{key: stage1["seconds"][key]
                                                         for key in ("single_bt_fit", "bayesmicro_fit")})
        if "new_users" in protocols:
            results["new_users"], results["seconds"]["new_users"] = _timed(
                "new_users", new_users, embedded, counts, stage1, seed, tuple(budgets))
        if "population" not in protocols:
            del results["population"]
    if "seen_users" in protocols:
        results["seen_users"], results["seconds"]["seen_users"] = _timed(
            "seen_users", seen_users, embedded, counts, columns["pair_id"], seed)
    if "crowdgppl" in protocols:
        results["crowdgppl"], results["seconds"]["crowdgppl"] = _timed("crowdgppl", crowdgppl, embedded, columns,
                                                                       seed)
    results["embedding"] = embedded.meta.get("embedding")
    return write_suite(out_dir, "ukp", results, _sections(results))


def _sections(results: dict[str, Any]) -> list[tuple[str, str]]:
    sections = []
    rows = []
    for protocol, names in (("population", ("single_bt", "bayesmicro")),
                            ("seen_users", ("single_bt", "population", "bayesmicro"))):
        for name in names:
            if protocol in results:
                rows.append({"protocol": protocol, "model": name, **results[protocol][name]})
    if "new_users" in results:
        part = results["new_users"]
        rows += [{"protocol": "new_users", "model": "single_bt", **part["single_bt"]},
                 {"protocol": "new_users", "model": "bayesmicro B=0", **part["before"]}]
        rows += [{"protocol": "new_users", "model": f"bayesmicro B={b}", **s} for b, s in part["after"].items()]
    if rows:
        sections.append(("Per-annotator accuracy and NLL (mean over annotators)",
                         markdown_table(rows, ("protocol", "model", "accuracy", "nll", "annotators", "pairs",
                                               "pooled_accuracy", "pooled_nll"))))
    if "crowdgppl" in results:
        part = results["crowdgppl"]
        table = [{"method": name, **{f"{m} {key}": part[name][m][key] for m in ("personal_all", "personal_over50",
                                                                                 "consensus")
                                     for key in ("accuracy", "cee")}} for name in ("single_bt", "bayesmicro")]
        table += [{"method": f"{name} (published)",
                   **{f"{m} {key}": rows_.get(m, {}).get(key) for m in ("personal_all", "personal_over50",
                                                                        "consensus") for key in ("accuracy", "cee")}}
                  for name, rows_ in part["published"].items()]
        columns = ["method"] + [f"{m} {key}" for m in ("personal_all", "personal_over50", "consensus")
                                for key in ("accuracy", "cee")]
        sections.append(("crowdGPPL protocol (leave one topic out; published figures are on all 32 topics)",
                         markdown_table(table, columns)))
    sections.append(("Seconds", markdown_table([results["seconds"]], list(results["seconds"]))))
    return sections
