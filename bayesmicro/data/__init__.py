from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.pairs import PreferencePairs, load_pairs
from bayesmicro.data.synthetic import PopulationSpec, Truth, make_population

__all__ = ["EmbeddedPairs", "PreferencePairs", "load_pairs", "PopulationSpec", "Truth", "make_population"]
