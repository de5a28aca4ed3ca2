from bayesmicro.infer.api import fit
from bayesmicro.infer.result import Fit, FitConfig

__all__ = ["fit", "Fit", "FitConfig"]
