"""Stage-1 inference: ``fit`` (``infer.api``) dispatches through the registry (``infer.registry``) to one class per
method (``infer.fitter``: MAP ``infer.map``, EM ``infer.em``, VI ``infer.vi``, NUTS ``infer.nuts``, the streamed fitter
``infer.stream``); the capacity choice (``infer.capacity``); the per-user latent-class fitter (``infer.latent_class``);
the result family (``infer.results``)."""

from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit, FitConfig

__all__ = ["fit", "Fit", "FitConfig"]
