"""ArviZ export: InferenceData built with ``from_dict`` from the summed-out model (``Fit.pointwise_log_lik``), never
``from_pyro`` (MCMC-only, and it scores enumerated models wrongly). ArviZ 0.23 takes the groups as keyword
arguments; ArviZ ≥ 1 (a DataTree) takes one dict of groups and renames some ELPD fields — both are handled here.
PSIS-LOO is in ``evaluate.loo``, model comparison and the choice of K in ``evaluate.selection``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate.alignment import align_draws
from bayesmicro.infer.results.mixture import Fit


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def arviz_major() -> int:
    return int(_az().__version__.split(".")[0])


def n_chains(fit: Fit) -> int:
    """Chains behind the fit's draws, concatenated chain by chain (``summary[inference]["chains"]``: NUTS's, the
    refined VI's HMC chains) when every chain kept as many draws; else 1."""
    chains = (fit.summary.get(fit.config.inference) or {}).get("chains", 1) if isinstance(fit.summary, dict) else 1
    return chains if isinstance(chains, int) and chains >= 1 and fit.n_draws % chains == 0 else 1


def to_inference_data(fit: Fit, data: EmbeddedPairs, log_lik: torch.Tensor | None = None):
    """InferenceData (ArviZ 0.x) / DataTree (ArviZ 1.x) with groups posterior (heads aligned across draws,
    (chain=C, draw=S/C, head=K, feature=d); C = ``n_chains``), log_likelihood (``obs``: (C, S/C, pair=n)) and
    observed_data (all 1: the chosen response won). With several chains ArviZ's R̂ (``az.rhat``) is meaningful.
    ``log_lik``: (S, n) stored in place of the fit's pointwise log-likelihood on ``data`` — minus other log
    importance weights, whose Pareto k̂ ``az.loo`` then reports."""
    az = _az()
    chains = n_chains(fit)

    def by_chain(x: torch.Tensor) -> np.ndarray:
        return x.double().numpy().reshape(chains, x.shape[0] // chains, *x.shape[1:])

    heads = align_draws(fit.heads) if fit.n_draws > 1 else fit.heads
    posterior = {"heads": by_chain(heads)}
    for key, value in fit.router_draws.items():
        posterior[f"router.{key}"] = by_chain(value)
    log_lik = {"obs": by_chain(fit.pointwise_log_lik(data) if log_lik is None else log_lik)}
    observed = {"obs": np.ones(len(data))}
    dims = {"heads": ["head", "feature"], "obs": ["pair"]}
    coords = {"head": np.arange(fit.config.k), "feature": np.arange(fit.config.dim), "pair": np.arange(len(data))}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="More chains")  # the refined VI: many short chains, as meant
        if arviz_major() >= 1:
            return az.from_dict({"posterior": posterior, "log_likelihood": log_lik, "observed_data": observed},
                                dims=dims, coords=coords)
        return az.from_dict(posterior=posterior, log_likelihood=log_lik, observed_data=observed, dims=dims,
                            coords=coords)
