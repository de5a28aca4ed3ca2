"""One validated config object per job (every command: fit, fit-store, fit-comparisons, eval, score, diagnose, route,
embed, export, bench), built by the CLI from its options and by Python callers from keyword arguments;
``bayesmicro.run(config)`` runs it (``bayesmicro.jobs``) and a run folder saves it as ``job.json``.

Validation happens once, in ``__post_init__``, with one-line ``BadInput`` errors whose ``argument`` is the Python
field name (the CLI names the option instead: ``--test-fraction``). This module imports nothing heavy (the CLI's
``--help`` reads it). The model's own config (what rebuilds a fitted model) stays ``bayesmicro.infer.results.mixture.FitConfig``
in ``config.json``; the job config records how the run was asked for.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesmicro import _check as check
from bayesmicro.errors import BadInput
from bayesmicro.methods import (Acquisition, Guide, Inference, Optimizer, RestartSelect, RouteMethod, Router,
                                RouterPosterior, ValidateBy)

JOB_FILE = "job.json"
AUTO = "auto"
# shared defaults: every command and the API use these
TEST_FRACTION = 0.2
SEED = 0
K_MAX = 5  # the largest K that k='auto' tries (`--k-max`; bayesmicro.infer.capacity.CapacityGrid)


def _auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def parse_k(value: int | str | None, *, allow_auto: bool = True) -> int | str | None:
    """``k``: None, 'auto', or an integer ≥ 1 (given as text on the command line)."""
    if value is None or (allow_auto and _auto(value)):
        return None if value is None else AUTO
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (isinstance(value, float) and value != number):
        expected = "a positive integer or 'auto'" if allow_auto else "a positive integer"
        raise BadInput(f"k expects {expected}, got {value!r}", argument="k")
    return check.integer(number, "k", 1)


def parse_scale(value: float | str | None, name: str) -> float | str | None:
    """A prior sd: None, 'auto' or a number > 0."""
    if value is None or _auto(value):
        return None if value is None else AUTO
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} expects a number or 'auto', got {value!r}", argument=name) from None
    return check.number(number, name, 0, low_open=True)


class JobConfig:
    """Shared behaviour: a JSON-ready dict, saving into a run folder, loading back."""

    def to_dict(self) -> dict[str, Any]:
        out = {"job": type(self).__name__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else (list(value) if isinstance(value, tuple)
                                                                      else value)
        return out

    def write_into(self, folder: str | Path) -> Path:
        path = Path(folder) / JOB_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


@dataclass(frozen=True)
class FitJobConfig(JobConfig):
    """A ``bayesmicro fit`` job (``fit``, ``fit-vi``, ``fit-nuts``): the data, the model, how it is fitted.

    ``data`` None: the built-in synthetic comparison. ``k`` None: 'auto' with data, 3 on the built-in population.
    None elsewhere means "the documented default for this setting" (it depends on ``k``; see ``bayesmicro.fit``).
    """

    data: str | None = None
    k: int | str | None = None
    router: str | None = None
    alpha: float | None = None
    prior_scale: float | None = None
    router_prior_scale: float | str | None = None
    validate_by: str = ValidateBy.PAIR
    k_max: int = K_MAX
    inference: str = Inference.MAP
    restarts: int | None = None
    select: str = RestartSelect.LOGLIK
    keep_restarts: bool = False
    optimizer: str = Optimizer.AUTO
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 2e-3
    test_fraction: float = TEST_FRACTION
    seed: int = SEED
    draws: int | None = None
    chains: int = 1
    warmup: int | None = None
    nuts_mass: str = "laplace"
    guide: str = Guide.LOWRANK
    router_posterior: str = RouterPosterior.REFINED
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("seed", check.seed(self.seed))
        set_("k", parse_k(self.k))
        if self.router is not None:
            set_("router", check.choice(self.router, "router", tuple(Router)))
        if self.alpha is not None:
            set_("alpha", check.number(self.alpha, "alpha", 0))
        if self.prior_scale is not None:
            set_("prior_scale", check.number(self.prior_scale, "prior_scale", 0, low_open=True))
        set_("router_prior_scale", parse_scale(self.router_prior_scale, "router_prior_scale"))
        set_("validate_by", check.choice(self.validate_by, "validate_by", tuple(ValidateBy)))
        set_("k_max", check.integer(self.k_max, "k_max", 1))
        set_("inference", check.choice(self.inference, "inference", tuple(Inference)))
        if self.restarts is not None:
            set_("restarts", check.integer(self.restarts, "restarts", 1))
        set_("select", check.choice(self.select, "select", tuple(RestartSelect)))
        set_("lr", check.number(self.lr, "lr", 0, low_open=True))
        set_("test_fraction", check.number(self.test_fraction, "test_fraction", 0, 1, high_open=True))
        for name, low in (("chains", 1), ("draws", 1), ("warmup", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise BadInput(f"{name} must be ≥ {low}, got {value!r}", argument=name)
        set_("guide", check.choice(self.guide, "guide", tuple(Guide)))
        set_("router_posterior", check.choice(self.router_posterior, "router_posterior", tuple(RouterPosterior)))
        if self.data is None and self.k == AUTO:
            raise BadInput("--k auto chooses capacity on DATA's training pairs; the built-in comparison fits given "
                           "K (default 3)", argument="k")
        if self.auto_k and self.router_prior_scale == AUTO:
            raise BadInput("--router-prior-scale auto: --k auto already chooses the router prior scale; give --k "
                           "a number to choose the scale alone")

    @property
    def auto_k(self) -> bool:
        return self.data is not None and self.k in (None, AUTO)


@dataclass(frozen=True)
class StoreFitConfig(JobConfig):
    """A ``bayesmicro fit-store`` job: one streamed AdamW MAP fit over a shard store (``write_shards``)."""

    data: str = ""
    k: int = 3
    router: str = Router.PROMPT
    alpha: float = 0.5
    prior_scale: float = 1.0
    router_prior_scale: float = 0.3
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 2e-3
    device: str = "cpu"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    seed: int = SEED
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("seed", check.seed(self.seed))
        if _auto(self.k):
            raise BadInput("k must be a whole number of heads for a shard store, got 'auto'", argument="k")
        k = parse_k(self.k, allow_auto=False)
        set_("k", 3 if k is None else k)
        set_("router", check.choice(self.router, "router", tuple(Router)))
        set_("alpha", check.number(self.alpha, "alpha", 0))
        set_("prior_scale", check.number(self.prior_scale, "prior_scale", 0, low_open=True))
        scale = parse_scale(self.router_prior_scale, "router_prior_scale")
        if scale == AUTO:
            raise BadInput("--router-prior-scale auto: a shard store gets one streamed MAP fit; load the pairs in "
                           "memory (`bayesmicro fit`) to choose the scale")
        set_("router_prior_scale", 0.3 if scale is None else scale)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None:
                set_(name, check.integer(getattr(self, name), name, 1))
        set_("lr", check.number(self.lr, "lr", 0, low_open=True))
        set_("checkpoint_every", check.integer(self.checkpoint_every, "checkpoint_every", 1))
        if not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise BadInput(f"device must be cpu or cuda[:i], got {self.device!r}", argument="device")


@dataclass(frozen=True)
class ComparisonsFitConfig(JobConfig):
    """A ``bayesmicro fit-comparisons`` job: the per-user latent class BT mixture on a paired-comparison table."""

    data: str = ""
    k: int | str = 3
    k_max: int = 5
    restarts: int = 10
    seed: int = SEED
    item1_col: str = "item1"
    item2_col: str = "item2"
    outcome_col: str = "outcome"
    user_col: str = "subject"
    context_cols: tuple[str, ...] = ()
    latent: str = "user"
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("seed", check.seed(self.seed))
        k = parse_k(self.k)
        set_("k", 3 if k is None else k)
        set_("k_max", check.integer(self.k_max, "k_max", 1))
        set_("restarts", check.integer(self.restarts, "restarts", 1))
        cols = self.context_cols.split(",") if isinstance(self.context_cols, str) else self.context_cols
        set_("context_cols", tuple(c.strip() for c in cols if c.strip()))
        if self.latent != "user":
            raise BadInput(f"latent must be 'user' (all comparisons of a user share one class), got "
                           f"{self.latent!r}", argument="latent")


@dataclass(frozen=True)
class RouteConfig(JobConfig):
    """A ``bayesmicro route`` job: stage 2 on B labelled pairs per unit of a fitted run."""

    run: str = ""
    data: str = ""
    methods: tuple[str, ...] = (RouteMethod.HIERARCHICAL,)
    budget: int = 50
    budgets: tuple[int, ...] = ()
    tau: float = 1e-3
    by: str | None = None
    context_from: str | None = None
    test_fraction: float = TEST_FRACTION
    active: bool = False
    acquisition: str = Acquisition.EPIG
    pool_size: int = 200
    restart: str = "kept"
    seed: int = SEED

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        methods = self.methods.split(",") if isinstance(self.methods, str) else self.methods
        methods = tuple(m.strip() for m in methods if m.strip())
        if not methods or any(m not in tuple(RouteMethod) for m in methods):
            raise BadInput(f"--method must be among {tuple(str(m) for m in RouteMethod)}, got "
                           f"{','.join(methods)!r}")
        set_("methods", methods)
        set_("seed", check.seed(self.seed))
        set_("budget", check.integer(self.budget, "budget", 1))
        if isinstance(self.budgets, str):
            set_("budgets", tuple(check.integers_list(self.budgets, "budgets")))
        else:
            set_("budgets", tuple(check.integer(b, "budgets", 1) for b in self.budgets))
        set_("tau", check.number(self.tau, "tau", 0, low_open=True))
        set_("test_fraction", check.number(self.test_fraction, "test_fraction", 0, 1, low_open=True,
                                           high_open=True))
        set_("pool_size", check.integer(self.pool_size, "pool_size", 1))
        for name in ("by", "context_from"):
            if getattr(self, name) not in (None, "group", "user"):
                raise BadInput(f"--{name.replace('_', '-')} must be 'group' or 'user', got {getattr(self, name)!r}")
        choices = tuple(a for a in Acquisition if a != Acquisition.RANDOM)
        if self.active and self.acquisition not in choices:
            raise BadInput(f"--acquisition must be one of {tuple(str(a) for a in choices)}, got "
                           f"{self.acquisition!r}")
        if self.restart not in ("kept", "context"):
            raise BadInput(f"--restart must be one of kept, context, got {self.restart!r}")


@dataclass(frozen=True)
class EmbedConfig(JobConfig):
    """A ``bayesmicro embed`` job: text pairs → embedded pairs (or a shard store) with a frozen backbone."""

    data: str = ""
    out: str = ""
    protocol: str | None = None
    model: str | None = None
    pooling: str | None = None
    batch_size: int | None = None
    max_batch_tokens: int | None = None
    batching: str = "auto"
    max_length: int = 512
    device: str = "auto"
    limit: int | None = None
    shards: bool = False
    cache_dir: str | None = None
    revision: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name, low in (("batch_size", 1), ("max_batch_tokens", 1), ("limit", 1)):
            if getattr(self, name) is not None:
                set_(name, check.integer(getattr(self, name), name, low))
        set_("max_length", check.integer(self.max_length, "max_length", 2))


@dataclass(frozen=True)
class BenchConfig(JobConfig):
    """A ``bayesmicro bench`` job: one suite, its seeds, where it writes, and the options the suite takes."""

    suite: str = ""
    seeds: int | None = None
    out: str | None = None
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict):
            raise BadInput(f"options must be a dict of the suite's options, got {self.options!r}",
                           argument="options")  # the suite and the seeds: checked by bench.run_suite
        object.__setattr__(self, "options", _bench_options(self.suite, dict(self.options)))


BENCH_PROTOCOL_SUITES = ("helpsteer2", "rpr")
# option → the suites that take it
BENCH_OPTION_SUITES: dict[str, tuple[str, ...]] = {
    "pairs": ("scale",), "dim": ("scale",), "k": ("scale", *BENCH_PROTOCOL_SUITES),
    "device": ("scale", "speed", *BENCH_PROTOCOL_SUITES), "data": (*BENCH_PROTOCOL_SUITES, "ukp"),
    "backbone": BENCH_PROTOCOL_SUITES, "limit": BENCH_PROTOCOL_SUITES,
    "budgets": ("synthetic", *BENCH_PROTOCOL_SUITES, "ukp"),
}


def _bench_options(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A suite's own options, checked (BadInput on an option the suite does not take or a bad value), with
    ``budgets`` (text or integers) as a tuple of ints."""
    from bayesmicro.bench import SUITES

    if name in SUITES:
        for option in extra:
            suites = BENCH_OPTION_SUITES.get(option)
            if suites is None:
                raise BadInput(f"options: {option!r} is no bench option (one of {', '.join(BENCH_OPTION_SUITES)})",
                               argument="options")
            if name not in suites:
                raise BadInput(f"--{option} only applies to the {', '.join(suites)} suite"
                               f"{'s' if len(suites) > 1 else ''}, not {name}")
    for option in ("pairs", "dim", "k", "limit"):
        if option in extra and extra[option] < 1:
            raise BadInput(f"--{option} must be ≥ 1, got {extra[option]}")
    if extra.get("data") is not None and not str(extra["data"]).strip():
        raise BadInput("--data must be a file, folder or hub id, got ''")
    if "budgets" in extra:
        extra["budgets"] = parse_budgets(extra["budgets"])
    device = extra.get("device", "cpu")
    allowed = ("cpu",) if name == "scale" else ("cpu", "auto")
    if not (device in allowed or device.startswith("cuda")):
        raise BadInput(f"--device must be {' or '.join(allowed)} or cuda[:i], got {device!r}")
    return extra


def parse_budgets(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'10,25,50' (or the integers) → (10, 25, 50); BadInput unless every item is an integer ≥ 1."""
    try:
        items = text.split(",") if isinstance(text, str) else list(text)
        values = tuple(int(item) for item in items if not isinstance(item, str) or item.strip())
        if not isinstance(text, str) and any(isinstance(v, bool) or int(v) != v for v in items):
            values = ()
    except (TypeError, ValueError):
        values = ()
    if not values or min(values) < 1:
        raise BadInput(f"--budgets must be comma-separated integers ≥ 1 (e.g. 10,25,50), got {text!r}")
    return values


EVAL_SPLITS = ("test", "train", "all")


@dataclass(frozen=True)
class EvalConfig(JobConfig):
    """A ``bayesmicro eval`` job: score a saved run on embedded pairs (``split``: test, train or all)."""

    run: str = ""
    data: str = ""
    split: str = "test"

    def __post_init__(self) -> None:
        if self.split not in EVAL_SPLITS:
            raise BadInput(f"--split must be test, train or all, got {self.split!r}")


@dataclass(frozen=True)
class ScoreConfig(JobConfig):
    """A ``bayesmicro score`` job: posterior preference probabilities and reward quantiles of a saved run, one row
    per pair (``out`` None: the rows are in the report)."""

    run: str = ""
    data: str = ""
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    level: float = 0.9
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        given = self.quantiles
        levels = check.numbers_list(given, "quantiles") if isinstance(given, str) else given
        try:
            levels = tuple(float(q) for q in levels)
        except (TypeError, ValueError):
            levels = ()
        if not levels or any(not 0.0 <= q <= 1.0 for q in levels):
            raise BadInput(f"quantiles must be numbers in [0, 1], got {given!r}", argument="quantiles")
        object.__setattr__(self, "quantiles", levels)
        object.__setattr__(self, "level", check.number(self.level, "level", 0, 1, low_open=True, high_open=True))


REDRAW_FACTOR = 4  # bayesmicro.evaluate.loo.REDRAW_FACTOR (checked equal in tests/cli)


@dataclass(frozen=True)
class DiagnoseConfig(JobConfig):
    """A ``bayesmicro diagnose`` job: PSIS-LOO, calibration and a reliability plot written into the run folder
    (``data`` None: the built-in population the run was fitted on; ``max_refits`` None: 10, and 0 for NUTS runs)."""

    run: str = ""
    data: str | None = None
    max_refits: int | None = None
    redraw_factor: int = REDRAW_FACTOR

    def __post_init__(self) -> None:
        for name in ("max_refits", "redraw_factor"):  # a whole number (the bounds: below, as the CLI words them)
            if getattr(self, name) is not None:
                check.integer(getattr(self, name), name)
        if self.max_refits is not None and self.max_refits < 0:
            raise BadInput(f"--max-refits must be ≥ 0, got {self.max_refits}")
        if self.redraw_factor < 1:
            raise BadInput(f"--redraw-factor must be ≥ 1, got {self.redraw_factor}")


@dataclass(frozen=True)
class ExportConfig(JobConfig):
    """A ``bayesmicro export`` job: a run as backbone + one linear score head for a context (or static weights);
    checked by ``bayesmicro.integrations.export.export_reward_model``."""

    run: str = ""
    out: str = ""
    backbone: str | None = None
    context: str | None = None
    weights: str | None = None
    prompt: str = ""
    revision: str | None = None
    overwrite: bool = False


__all__ = ["AUTO", "BenchConfig", "ComparisonsFitConfig", "DiagnoseConfig", "EmbedConfig", "EvalConfig",
           "ExportConfig", "FitJobConfig", "JOB_FILE", "JobConfig", "RouteConfig", "ScoreConfig", "StoreFitConfig",
           "K_MAX", "SEED", "TEST_FRACTION", "parse_k"]
