"""bayesmicro: personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro)."""

from bayesmicro.data import EmbeddedPairs, PopulationSpec, PreferencePairs, Truth, load_pairs, make_population
from bayesmicro.data.shards import load_shards, write_shards
from bayesmicro.data.protocols import load_protocol
from bayesmicro.embed import Embedder
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import score as evaluate
from bayesmicro.infer import Fit, FitConfig, fit
from bayesmicro.infer.results.base import Posterior
from bayesmicro.infer.results.latent_class import LatentClassResult
from bayesmicro.infer.results.load import load
from bayesmicro.infer.stream import StreamSchedule, fit_stream

__all__ = ["BadInput", "EmbeddedPairs", "Fit", "FitConfig", "PopulationSpec", "PreferencePairs", "Truth",
           "evaluate", "fit", "load", "load_pairs", "make_population"]
__all__ += ["StreamSchedule", "fit_stream", "load_shards", "write_shards"]
__all__ += ["Embedder", "load_protocol"]
__all__ += ["LatentClassResult", "Posterior"]
__version__ = "0.1.0"
