"""The names of every choice the library offers, as enums: the CLI lists them, the API accepts them, the registries
map them to classes. Each is a ``StrEnum``, so a member equals its value (``Inference.MAP == "map"``) and a
config saved as plain strings loads back unchanged. This module imports nothing heavy (the CLI's ``--help`` reads it).
"""

from __future__ import annotations

from enum import StrEnum


class Inference(StrEnum):
    """How stage 1 is fitted: a MAP point, VI around it, NUTS draws, or EM."""

    MAP = "map"
    VI = "vi"
    NUTS = "nuts"
    EM = "em"


class Router(StrEnum):
    """What the stage-1 router reads: nothing (static weights), the prompt, [prompt; context], or a label's one-hot."""

    NONE = "none"
    PROMPT = "prompt"
    CONTEXT = "context"
    USER = "user"
    GROUP = "group"

    @property
    def reads_label(self) -> bool:
        """Whether the router reads the one-hot of each pair's ``user`` or ``group`` label."""
        return self in (Router.USER, Router.GROUP)

    @property
    def reads_embedding(self) -> bool:
        """Whether the router reads the prompt's embedding (and, for ``context``, the context's)."""
        return self in (Router.PROMPT, Router.CONTEXT)


class RouteMethod(StrEnum):
    """How stage 2 personalizes the mixture to a unit (user, group or context) from its labelled pairs."""

    HIERARCHICAL = "hierarchical"
    JOINT = "joint"
    HEDGE = "hedge"
    POSTERIOR = "posterior"
    AMORTIZED = "amortized"
    HYRE = "hyre"


class Optimizer(StrEnum):
    """The MAP optimizer: ``auto`` picks full-batch L-BFGS where the data fit in memory, AdamW minibatches otherwise."""

    AUTO = "auto"
    LBFGS = "lbfgs"
    ADAM = "adam"


class ValidateBy(StrEnum):
    """The units a validation split holds out whole."""

    PAIR = "pair"
    GROUP = "group"
    USER = "user"


class RestartSelect(StrEnum):
    """Which MAP restart is kept: the best training log-likelihood or the largest Laplace evidence."""

    LOGLIK = "loglik"
    EVIDENCE = "evidence"


class Guide(StrEnum):
    """The SVI guide over the head weights."""

    NORMAL = "normal"
    LOWRANK = "lowrank"


class RouterPosterior(StrEnum):
    """The posterior over the router's weights under ``Inference.VI``."""

    LINEARISED = "linearised"
    REFINED = "refined"
    LAPLACE = "laplace"
    SVI = "svi"


class Acquisition(StrEnum):
    """How active routing picks the next pair to label."""

    EER = "eer"
    EPIG = "epig"
    EIG = "eig"
    RANDOM = "random"


class Pooling(StrEnum):
    """How a backbone's token states become one embedding."""

    LAST = "last"
    MEAN = "mean"


class RestartRule(StrEnum):
    """Which stage-1 restart stage 2 routes: the one stage 1 kept, or the one whose router best separates the
    labelled pairs' contexts."""

    KEPT = "kept"
    CONTEXT = "context"


class WeightMode(StrEnum):
    """How the exact weight posterior's π enters each pair: as the static weights, or tilting the stage-1 router."""

    STATIC = "static"
    TILT = "tilt"


class KCriterion(StrEnum):
    """How ``evaluate.comparison.auto_k`` compares K: held-out elpd of MAP fits, or PSIS-LOO of VI fits."""

    HOLDOUT = "holdout"
    LOO = "loo"


class MassMatrix(StrEnum):
    """NUTS's inverse mass matrix: the Laplace covariance (fixed), or Pyro's diagonal adaptation."""

    LAPLACE = "laplace"
    ADAPT = "adapt"


class Batching(StrEnum):
    """How the embedder batches texts: ``auto`` picks the first of varlen, packed, padded the model and device give
    the same features with."""

    AUTO = "auto"
    VARLEN = "varlen"
    PACKED = "packed"
    PADDED = "padded"


class RefineTarget(StrEnum):
    """What a refined VI's HMC chains sample: the posterior, or the mixture of leave-one-out posteriors."""

    POSTERIOR = "posterior"
    LOO_MIXTURE = "loo_mixture"
