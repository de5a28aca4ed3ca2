"""``irreducible``: Theorem 3.2 on populations with known K, ρ = min P(z|x) and head spread.

Population (``StudyPopulation``): K heads w_k = scale/√d·(shared·u + spread·v_k) with u, v_k ~ N(0, I_d) drawn once
per population; each pair draws z ~ Categorical(proportions) independently of its features, so P(z = k | x) =
proportions_k and ρ = min_k proportions_k; responses h_a, h_b ~ N(0, I_d); the label follows head z:
P(a ≻ b | x, z) = σ(w_zᵀ(h_a − h_b)). The context is one-hot(z): a model that routes on it can see z, a single BT
reward cannot. Quantities and the theorem: ``bayesmicro.evaluate.irreducible``.

For each population and training size n we fit the single BT (k = 1) by full-batch L-BFGS to convergence and the
context-routed mixture (k = K, α = 0), and score both by the expected cross-entropy L_CE on a large fresh evaluation
sample (labels integrated out exactly, so only E_x is Monte-Carlo). Claims checked: L_CE(single BT) ≥ bound on every
population and n; |L_CE(mixture) − H| ≤ 0.01 nats at the largest n.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro.bench.report import log, markdown_table, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate.irreducible import component_probs, expected_cross_entropy, theorem_3_2
from bayesmicro.infer.api import fit
from bayesmicro.infer.map import Schedule

MIXTURE_TOLERANCE = 0.01  # nats: the mixture's L_CE must be within this of H at the largest n


@dataclass(frozen=True)
class StudyPopulation:
    """A mixture population with known K, mixing proportions (ρ = their minimum) and head spread."""

    k: int = 2
    spread: float = 1.0
    proportions: tuple[float, ...] | None = None  # None: uniform
    dim: int = 8
    scale: float = 3.0
    shared: float = 1.0

    @property
    def weights(self) -> torch.Tensor:
        """(K,) P(z = k | x), the same for every x."""
        p = torch.full((self.k,), 1.0 / self.k) if self.proportions is None else torch.tensor(self.proportions)
        return (p / p.sum()).double()

    @property
    def name(self) -> str:
        props = "uniform" if self.proportions is None else "/".join(f"{p:g}" for p in self.proportions)
        return f"K={self.k} π={props} spread={self.spread:g}"


def true_heads(pop: StudyPopulation, seed: int) -> torch.Tensor:
    """(K, d) heads of the population; the draw depends on (seed, K, d) only, so populations that differ only in
    spread share the directions u, v_k."""
    gen = torch.Generator().manual_seed(7919 * seed + 31 * pop.k + pop.dim)
    u, v = torch.randn(1, pop.dim, generator=gen), torch.randn(pop.k, pop.dim, generator=gen)
    return pop.scale / math.sqrt(pop.dim) * (pop.shared * u + pop.spread * v)


def draw_pairs(pop: StudyPopulation, heads: torch.Tensor, n: int, seed: int,
               labelled: bool = True) -> tuple[EmbeddedPairs, torch.Tensor]:
    """n pairs with one-hot(z) as context; returns (pairs, z (n,)). ``labelled``: chosen/rejected follow a label drawn
    from head z; otherwise chosen = response a, rejected = response b (for expected cross-entropies)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.multinomial(pop.weights.float(), n, replacement=True, generator=gen)
    a, b = torch.randn(n, pop.dim, generator=gen), torch.randn(n, pop.dim, generator=gen)
    if labelled:
        a_wins = torch.rand(n, generator=gen) < torch.sigmoid(((a - b) * heads[z]).sum(-1))
        a, b = torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)
    pairs = EmbeddedPairs(chosen=a, rejected=b, prompt=torch.zeros(n, 1),
                          context=torch.nn.functional.one_hot(z, pop.k).float(), source="<irreducible study>")
    return pairs, z


def with_context(pairs: EmbeddedPairs, k: int, component: int) -> EmbeddedPairs:
    """The same pairs, every one shown context one-hot(component)."""
    ctx = torch.zeros(len(pairs), k)
    ctx[:, component] = 1.0
    return EmbeddedPairs(chosen=pairs.chosen, rejected=pairs.rejected, prompt=pairs.prompt, context=ctx)


def study_population(pop: StudyPopulation, sizes: list[int], seed: int, n_eval: int,
                     restarts: int = 2) -> dict[str, Any]:
    heads = true_heads(pop, seed)
    evaluation, _ = draw_pairs(pop, heads, n_eval, seed=10_000 + seed, labelled=False)
    probs = component_probs(heads, evaluation.diff())
    weights = pop.weights.expand(n_eval, pop.k)
    theory = theorem_3_2(probs, weights)
    shown = [with_context(evaluation, pop.k, c) for c in range(pop.k)]
    rows = []
    for n in sizes:
        train, _ = draw_pairs(pop, heads, n, seed=seed * 1_000 + n)
        start = time.perf_counter()
        single = fit(train, k=1, router="none", schedule=Schedule(optimizer="lbfgs", max_iter=2000))
        mixture = fit(train, k=pop.k, router="context", alpha=0.0, hidden=32, restarts=restarts, seed=seed,
                      schedule=Schedule(optimizer="lbfgs", max_iter=1000))
        seconds = time.perf_counter() - start
        single_ce = expected_cross_entropy(single.predict_proba(evaluation), probs, weights)
        mixture_q = torch.stack([mixture.predict_proba(s) for s in shown], dim=-1)
        mixture_ce = expected_cross_entropy(mixture_q, probs, weights)
        log(f"irreducible: {pop.name} seed {seed} n {n:,}: single BT − bound {single_ce - theory['bound']:+.4f}, "
            f"mixture − H {mixture_ce - theory['entropy']:+.4f} ({seconds:.1f} s)")
        rows.append({"n": n, "single_bt_ce": single_ce, "mixture_ce": mixture_ce,
                     "single_minus_bound": single_ce - theory["bound"], "mixture_minus_entropy": mixture_ce -
                     theory["entropy"], "fit_seconds": seconds})
    return {"population": {**asdict(pop), "name": pop.name}, "theorem": theory, "by_n": rows}


DEFAULT_POPULATIONS = tuple(
    [StudyPopulation(k=2, spread=s) for s in (0.0, 0.5, 1.0, 2.0)]
    + [StudyPopulation(k=3, spread=s, proportions=(0.5, 0.3, 0.2)) for s in (0.0, 0.5, 1.0, 2.0)]
)
DEFAULT_SIZES = (1_000, 10_000, 100_000)


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/irreducible",
        populations: tuple[StudyPopulation, ...] = DEFAULT_POPULATIONS, sizes: tuple[int, ...] = DEFAULT_SIZES,
        n_eval: int = 100_000, restarts: int = 2, **_: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    sizes = sorted(sizes)
    studies = [study_population(pop, list(sizes), seed, n_eval, restarts) | {"seed": seed}
               for seed in range(seeds) for pop in populations]
    single_ok = all(r["single_minus_bound"] >= 0 for s in studies for r in s["by_n"])
    mixture_ok = all(abs(s["by_n"][-1]["mixture_minus_entropy"]) <= MIXTURE_TOLERANCE for s in studies)
    results = {"seeds": list(range(seeds)), "sizes": sizes, "n_eval": n_eval, "studies": studies,
               "single_bt_above_bound_everywhere": single_ok,
               "mixture_within_tolerance_of_entropy_at_largest_n": mixture_ok, "tolerance_nats": MIXTURE_TOLERANCE}
    return write_suite(out_dir, "irreducible", results, _sections(studies, sizes, single_ok, mixture_ok),
                       {"theorem_3_2": _plot(studies, sizes[-1])})


def _sections(studies, sizes, single_ok, mixture_ok) -> list[tuple[str, str]]:
    rows = []
    for s in studies:
        t, last = s["theorem"], s["by_n"][-1]
        rows.append({"population": s["population"]["name"], "seed": s["seed"], "ρ": t["rho"], "H": t["entropy"],
                     "2ρK·V": t["gap"], "bound": t["bound"], "single BT CE": last["single_bt_ce"],
                     "mixture CE": last["mixture_ce"], "single − bound": last["single_minus_bound"],
                     "mixture − H": last["mixture_minus_entropy"]})
    cols = ["population", "seed", "ρ", "H", "2ρK·V", "bound", "single BT CE", "mixture CE", "single − bound",
            "mixture − H"]
    by_n = [{"population": s["population"]["name"], "seed": s["seed"], "n": r["n"],
             "single − bound": r["single_minus_bound"], "mixture − H": r["mixture_minus_entropy"],
             "fit seconds": r["fit_seconds"]} for s in studies for r in s["by_n"]]
    summary = (f"Expected cross-entropy (nats) on a fresh evaluation sample (labels integrated out); bound = "
               f"2ρK·E_x Var_z[P(y|x,z)] + H (Theorem 3.2), H = label entropy under the truth. Largest n = "
               f"{sizes[-1]:,}. Single BT ≥ bound on every population and n: **{'yes' if single_ok else 'NO'}**; "
               f"mixture within {MIXTURE_TOLERANCE} nats of H at the largest n: **{'yes' if mixture_ok else 'NO'}**.")
    return [("Theorem 3.2: single BT vs bound, mixture vs entropy", summary + "\n\n" + markdown_table(rows, cols)),
            ("Every training size", markdown_table(by_n, ["population", "seed", "n", "single − bound",
                                                          "mixture − H", "fit seconds"]))]


def _plot(studies, largest_n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    families: dict[str, list] = {}
    for s in studies:
        pop = s["population"]
        key = f"K={pop['k']}, ρ={s['theorem']['rho']:.2f}" + (f", seed {s['seed']}" if s["seed"] else "")
        families.setdefault(key, []).append(s)
    for (key, group), color in zip(families.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        group = sorted(group, key=lambda s: s["population"]["spread"])
        x = np.array([s["population"]["spread"] for s in group])
        last = [next(r for r in s["by_n"] if r["n"] == largest_n) for s in group]
        ax.plot(x, [r["single_bt_ce"] for r in last], "o-", color=color, label=f"single BT ({key})")
        ax.plot(x, [s["theorem"]["bound"] for s in group], "--", color=color, label=f"bound 2ρK·V + H ({key})")
        ax.plot(x, [r["mixture_ce"] for r in last], "s:", color=color, label=f"mixture ({key})")
        ax.plot(x, [s["theorem"]["entropy"] for s in group], "x", color=color, ms=9, label=f"H ({key})")
    ax.set_xlabel("head spread")
    ax.set_ylabel(f"expected cross-entropy (nats), n = {largest_n:,}")
    ax.set_title("Theorem 3.2: a single BT cannot fit a mixture")
    ax.legend(fontsize=6.5, ncol=2)
    return fig
