"""bayesmicro: personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro)."""

from bayesmicro.data import EmbeddedPairs, PopulationSpec, PreferencePairs, Truth, load_pairs, make_population
from bayesmicro.data.protocols import load_protocol
from bayesmicro.embed import Embedder
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import score as evaluate
from bayesmicro.infer import Fit, FitConfig, fit

load = Fit.load

__all__ = ["BadInput", "EmbeddedPairs", "Fit", "FitConfig", "PopulationSpec", "PreferencePairs", "Truth",
           "evaluate", "fit", "load", "load_pairs", "make_population"]
__all__ += ["Embedder", "load_protocol"]
__version__ = "0.1.0"
