"""bayesmicro: personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro).

The public names below load on first use (PEP 562 ``__getattr__``): ``import bayesmicro`` and ``bayesmicro --help``
import neither torch nor pyro. No public name shadows a subpackage: ``bayesmicro.evaluate`` is the package, and the
scoring function is ``bayesmicro.score_predictions``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "EmbeddedPairs": ("bayesmicro.data.embedded", "EmbeddedPairs"),
    "PopulationSpec": ("bayesmicro.data.synthetic", "PopulationSpec"),
    "PreferencePairs": ("bayesmicro.data.pairs", "PreferencePairs"),
    "Truth": ("bayesmicro.data.synthetic", "Truth"),
    "load_pairs": ("bayesmicro.data.pairs", "load_pairs"),
    "make_population": ("bayesmicro.data.synthetic", "make_population"),
    "load_shards": ("bayesmicro.data.shards", "load_shards"),
    "write_shards": ("bayesmicro.data.shards", "write_shards"),
    "load_protocol": ("bayesmicro.data.protocols", "load_protocol"),
    "Embedder": ("bayesmicro.embed", "Embedder"),
    "BadInput": ("bayesmicro.errors", "BadInput"),
    "score_predictions": ("bayesmicro.evaluate.metrics", "score"),
    "Fit": ("bayesmicro.infer", "Fit"),
    "FitConfig": ("bayesmicro.infer", "FitConfig"),
    "fit": ("bayesmicro.infer", "fit"),
    "LatentClassResult": ("bayesmicro.infer.results.latent_class", "LatentClassResult"),
    "load": ("bayesmicro.infer.results.load", "load"),
    "Posterior": ("bayesmicro.infer.results.base", "Posterior"),
    "StreamSchedule": ("bayesmicro.infer.stream", "StreamSchedule"),
    "fit_stream": ("bayesmicro.infer.stream", "fit_stream"),
    # the job configs every command builds, and the one call that runs any of them (bayesmicro.jobs)
    "run": ("bayesmicro.jobs", "run"),
    "FitJobConfig": ("bayesmicro.config", "FitJobConfig"),
    "StoreFitConfig": ("bayesmicro.config", "StoreFitConfig"),
    "ComparisonsFitConfig": ("bayesmicro.config", "ComparisonsFitConfig"),
    "EvalConfig": ("bayesmicro.config", "EvalConfig"),
    "ScoreConfig": ("bayesmicro.config", "ScoreConfig"),
    "DiagnoseConfig": ("bayesmicro.config", "DiagnoseConfig"),
    "RouteConfig": ("bayesmicro.config", "RouteConfig"),
    "EmbedConfig": ("bayesmicro.config", "EmbedConfig"),
    "ExportConfig": ("bayesmicro.config", "ExportConfig"),
    "BenchConfig": ("bayesmicro.config", "BenchConfig"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Load a public name on first use and keep it in this module."""
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmicro' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:  # type checkers and IDEs see the names eagerly
    from bayesmicro.config import (BenchConfig, ComparisonsFitConfig, DiagnoseConfig, EmbedConfig, EvalConfig,
                                   ExportConfig, FitJobConfig, RouteConfig, ScoreConfig, StoreFitConfig)
    from bayesmicro.data import EmbeddedPairs, PopulationSpec, PreferencePairs, Truth, load_pairs, make_population
    from bayesmicro.data.protocols import load_protocol
    from bayesmicro.data.shards import load_shards, write_shards
    from bayesmicro.embed import Embedder
    from bayesmicro.errors import BadInput
    from bayesmicro.evaluate.metrics import score as score_predictions
    from bayesmicro.infer import Fit, FitConfig, fit
    from bayesmicro.infer.results.latent_class import LatentClassResult
    from bayesmicro.infer.results.base import Posterior
    from bayesmicro.infer.results.load import load
    from bayesmicro.infer.stream import StreamSchedule, fit_stream
    from bayesmicro.jobs import run
