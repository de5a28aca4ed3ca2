"""``classic``: per-user latent-class BT mixtures on two classical paired-comparison tables, K = 1 … 4.

- CEMS business-school choice (Dittrich, Hatzinger & Katzenbeisser 1998), router on english, french, spanish,
  italian;
- "Germany's Next Topmodel 2007" (Strobl, Wickelmaier & Zeileis 2011), router on gender, q1, q2, q3.

All of a subject's comparisons share one latent class; the class probabilities are a multinomial logit on the
subject's covariates (flexmix's concomitant-variable model); ties are dropped and the last item is the reference
(``bayesmicro.data.protocols.comparisons``). Fitted by EM from ``restarts`` random partitions
(``bayesmicro.infer.latent_class.fit_latent_class``). Per K: the maximised log-likelihood, the number of free
parameters p = K·(n_items − 1) + (K − 1)·(n_covariates + 1), BIC = −2·LL + p·log(n) with n the number of
comparisons (flexmix's count of observations), the fit time, and R flexmix's published optimum beside ours.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro.bench.report import log, markdown_table, mean_sd, write_suite
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.protocols.comparisons import load_comparisons
from bayesmicro.infer.latent_class import bic, fit_latent_class, n_parameters

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# name → (file, router covariates, flexmix's published maximised log-likelihood for K = 1, 2, 3)
DATASETS: dict[str, tuple[Path, tuple[str, ...], tuple[float, ...]]] = {
    "cems_choice": (SHARED / "cems_choice.csv.gz", ("english", "french", "spanish", "italian"),
                    (-2435.17, -2187.85, -2077.29)),
    "topmodel2007": (SHARED / "topmodel2007.csv.gz", ("gender", "q1", "q2", "q3"),
                     (-1912.05, -1802.83, -1730.63)),
}
KS = (1, 2, 3, 4)


def first_users(pairs: EmbeddedPairs, max_users: int | None) -> EmbeddedPairs:
    """The comparisons of the first ``max_users`` subjects (sorted by label); all of them when None."""
    if max_users is None:
        return pairs
    keep = set(sorted(set(pairs.user.tolist()))[:max_users])
    return pairs.subset(np.flatnonzero([u in keep for u in pairs.user.tolist()]))


def run_dataset(pairs: EmbeddedPairs, ks: tuple[int, ...], seeds: int, restarts: int,
                published: tuple[float, ...] = ()) -> list[dict[str, Any]]:
    """One row per K: best log-likelihood over seeds, mean ± sd over seeds of the log-likelihood and fit seconds,
    parameters, BIC (of the best fit) and flexmix's optimum (None where none was published)."""
    n_items = len(pairs.meta["items"])
    n_cov = len(pairs.meta["covariates"])
    rows = []
    for k in ks:
        logliks, seconds = [], []
        for seed in range(seeds):
            start = time.perf_counter()
            result = fit_latent_class(pairs, k, restarts=restarts, seed=seed)
            seconds.append(time.perf_counter() - start)
            logliks.append(result.loglik)
        p = n_parameters(k, n_items, n_cov)
        best = max(logliks)
        flexmix = published[k - 1] if k - 1 < len(published) else None
        rows.append({"k": k, "loglik": best, "loglik_over_seeds": mean_sd(logliks), "n_params": p,
                     "bic": bic(best, p, len(pairs)), "fit_seconds": mean_sd(seconds), "flexmix_loglik": flexmix,
                     "reaches_flexmix": None if flexmix is None else round(best, 2) >= flexmix,
                     "class_sizes": result.responsibilities.sum(0).tolist() if seeds == 1 else None})
        log(f"classic: K={k} loglik {best:.2f} (flexmix {flexmix}) in {np.mean(seconds):.1f} s/fit")
    return rows


def run(seeds: int = 3, out_dir: Path | str = "benchmarks/results/classic", *,
        datasets: dict[str, tuple[Path, tuple[str, ...], tuple[float, ...]]] | None = None,
        ks: tuple[int, ...] = KS, restarts: int = 10, max_users: int | None = None, **_: Any) -> dict[str, Any]:
    """Fit every K on every dataset (``restarts`` EM starts per fit, one fit per seed) and write the suite's files."""
    torch.set_num_threads(1)
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])  # torch's lazy optimizer imports: not the first fit's time
    start = time.perf_counter()
    datasets = datasets if datasets is not None else DATASETS
    out: dict[str, Any] = {}
    for name, (path, covariates, published) in datasets.items():
        pairs = first_users(load_comparisons(path, context_cols=list(covariates)), max_users)
        rows = run_dataset(pairs, tuple(ks), seeds, restarts, published)
        best_bic = min(rows, key=lambda r: r["bic"])["k"]
        out[name] = {"source": str(path), "router_covariates": list(covariates),
                     "covariate_columns": pairs.meta["covariates"], "items": pairs.meta["items"],
                     "reference_item": pairs.meta["reference_item"], "n_pairs": len(pairs),
                     "n_users": len(set(pairs.user.tolist())), "ties_dropped": pairs.meta["ties_dropped"],
                     "by_k": rows, "k_best_bic": best_bic}
    results = {"seeds": list(range(seeds)), "restarts": restarts, "ks": list(ks), "max_users": max_users,
               "datasets": out, "seconds": time.perf_counter() - start}
    return write_suite(out_dir, "classic", results, _sections(results), {"bic": _bic_plot(results)})


def _sections(results: dict[str, Any]) -> list[tuple[str, str]]:
    sections = []
    for name, ds in results["datasets"].items():
        intro = (f"{ds['n_pairs']:,} comparisons ({ds['ties_dropped']} ties dropped) by {ds['n_users']} subjects of "
                 f"{len(ds['items'])} items (reference: {ds['reference_item']}); router: multinomial logit on "
                 f"{', '.join(ds['router_covariates'])}. EM, best of {results['restarts']} random starts per fit, "
                 f"one fit per seed ({len(results['seeds'])} seeds): `loglik` is the best over seeds, `fit_seconds` "
                 f"mean ± sd over seeds. BIC = −2·LL + p·log(n), n = comparisons. `flexmix`: R flexmix's "
                 f"published optimum (none published for K = 4). Lowest BIC: K = {ds['k_best_bic']}.")
        table = markdown_table(ds["by_k"], ["k", "loglik", "flexmix_loglik", "reaches_flexmix", "n_params", "bic",
                                            "fit_seconds"], digits=2)
        sections.append((f"{name}: log-likelihood and BIC over K", intro + "\n\n" + table))
    return sections


def _bic_plot(results: dict[str, Any]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for name, ds in results["datasets"].items():
        ks = [r["k"] for r in ds["by_k"]]
        ax.plot(ks, [r["bic"] for r in ds["by_k"]], "o-", label=name)
    ax.set_xlabel("latent classes K")
    ax.set_ylabel("BIC")
    ax.set_xticks(results["ks"])
    ax.set_title("Per-user latent class BT: BIC over K")
    ax.legend(fontsize=7)
    return fig


__all__ = ["run", "run_dataset", "n_parameters", "bic", "first_users", "DATASETS"]
