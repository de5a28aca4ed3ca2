"""``bayesmicro fit``, ``fit-vi``, ``fit-nuts``: fit a mixture of BT heads on embedded pairs (or, with no DATA, the
built-in comparison on a known population). Each body is option parsing plus one call: the options become one
``FitJobConfig`` (validated there, as for the Python API), which ``bayesmicro.jobs.run`` runs (``jobs.fit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import FitJobConfig
from bayesmicro.methods import Guide, Inference, Optimizer, RestartSelect, Router, RouterPosterior, ValidateBy

DATA_HELP = ("Embedded pairs: a folder from `bayesmicro embed` or an .npz. Omit to run the built-in synthetic "
             "comparison (one BT, a static and a routed mixture against the oracle).")
K_HELP = ("Number of BT heads, or 'auto' (the default with DATA; 3 for the built-in comparison): K = 1..--k-max, and "
          "the prior scales and α not given, chosen by the log-likelihood of a validation part of the training "
          "pairs (--validate-by); the test pairs play no part.")
NUTS_MASS = ("laplace", "adapt")


def _router() -> Any:
    return o.choice(None, "--router", Router, "What the router reads — user/group: the one-hot of each pair's "
                    "label, i.e. each user's (group's) own weights (default: prompt with DATA, context on the "
                    "built-in population).", o.MODEL, shown="prompt with DATA, else context")


def _alpha() -> Any:
    return typer.Option(None, "--alpha", help="Router-entropy regulariser α (default: chosen by --k auto; with a "
                        "given K the paper's 0.5 with DATA, 0 on the built-in population and for label routers).",
                        rich_help_panel=o.MODEL, show_default="chosen by --k auto, else 0.5 (0 without DATA)")


def _prior_scale() -> Any:
    return typer.Option(None, "--prior-scale", help="sd of the Gaussian prior on head weights (default: chosen by "
                        "--k auto, else 1).", rich_help_panel=o.MODEL,
                        show_default="chosen by --k auto, else 1")


def _router_prior_scale() -> Any:
    return typer.Option(None, "--router-prior-scale", help="sd of the Gaussian prior on the router network's "
                        "weights (default: chosen by --k auto, else 0.3), or 'auto' (the best held-out ELPD of "
                        "0.03, 0.1, 0.3, 1 on training pairs).", rich_help_panel=o.MODEL,
                        show_default="chosen by --k auto, else 0.3")


def _validate_by() -> Any:
    return o.choice(ValidateBy.PAIR, "--validate-by", ValidateBy, "What --k auto holds out whole: distinct "
                    "comparisons, or whole groups/users (as the test will).", o.CAPACITY)


def _draws() -> Any:
    return typer.Option(None, "--draws", help="Posterior draws kept (NUTS: per chain; default 400 NUTS, 640 "
                        "refined, 4,000 linearised/Laplace, 1,000 SVI).", rich_help_panel=o.POSTERIOR,
                        show_default="by method")


@cli_errors
def fit_command(
    data: Optional[Path] = typer.Argument(None, help=DATA_HELP),
    test_fraction: float = o.test_fraction(),
    k: Optional[str] = o.k(K_HELP),
    router: Optional[str] = _router(),
    alpha: Optional[float] = _alpha(),
    prior_scale: Optional[float] = _prior_scale(),
    router_prior_scale: Optional[str] = _router_prior_scale(),
    validate_by: str = _validate_by(),
    k_max: int = o.k_max(),
    inference: str = o.choice(Inference.MAP, "--inference", Inference, "map: the MAP point; em: EM, with a "
                              "posterior around its optimum; vi, nuts: posterior draws with default settings "
                              "(tune them with `fit-vi` / `fit-nuts`).", o.INFERENCE),
    restarts: Optional[int] = o.restarts(),
    select_restart: str = o.choice(RestartSelect.LOGLIK, "--select-restart", RestartSelect, "Keep the restart "
                                   "with the best training log-likelihood, or (routed mixtures) the largest Laplace "
                                   "evidence, which penalises a router that memorises pairs.", o.INFERENCE),
    keep_restarts: bool = typer.Option(False, "--keep-restarts", help="Keep every restart's MAP in the run "
                                       "(restarts/<r>/) for `bayesmicro route --restart context` to choose among.",
                                       rich_help_panel=o.INFERENCE),
    optimizer: str = o.choice(Optimizer.AUTO, "--optimizer", Optimizer, "auto: full-batch L-BFGS where the data "
                              "fit in memory, AdamW minibatches otherwise.", o.OPTIMIZER),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="AdamW epochs.", rich_help_panel=o.OPTIMIZER,
                                         show_default="20"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="AdamW minibatch.",
                                             rich_help_panel=o.OPTIMIZER, show_default="512"),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW learning rate.", rich_help_panel=o.OPTIMIZER),
    seed: int = o.seed(),
    out: Optional[Path] = o.run_out(),
    overwrite: bool = o.overwrite(),
    as_json: bool = o.as_json(),
) -> None:
    """Fit a mixture of Bradley–Terry heads and report held-out accuracy, NLL, Brier and ECE."""
    job = FitJobConfig(data=_text(data), k=k, router=router, alpha=alpha, prior_scale=prior_scale,
                       router_prior_scale=router_prior_scale, validate_by=validate_by, k_max=k_max,
                       inference=inference, restarts=restarts, select=select_restart, keep_restarts=keep_restarts,
                       optimizer=optimizer, epochs=epochs, batch_size=batch_size, lr=lr, test_fraction=test_fraction,
                       seed=seed, out=_text(out), overwrite=overwrite)
    _emit(job, as_json)


@cli_errors
def fit_vi_command(
    data: Optional[Path] = typer.Argument(None, help=DATA_HELP),
    test_fraction: float = o.test_fraction(),
    k: Optional[str] = o.k(K_HELP),
    router: Optional[str] = _router(),
    alpha: Optional[float] = _alpha(),
    prior_scale: Optional[float] = _prior_scale(),
    router_prior_scale: Optional[str] = _router_prior_scale(),
    validate_by: str = _validate_by(),
    k_max: int = o.k_max(),
    restarts: Optional[int] = o.restarts(),
    guide: str = o.choice(Guide.LOWRANK, "--guide", Guide, "The SVI guide over the head weights (normal: mean "
                          "field).", o.POSTERIOR),
    router_posterior: str = o.choice(RouterPosterior.REFINED, "--router-posterior", RouterPosterior, "Routed "
                                     "mixtures: refined (the linearised draws moved by HMC on the exact network) | "
                                     "linearised (router linearised at the MAP; a few times faster) | laplace (the "
                                     "Gaussian centred on the MAP) | svi (output layer).", o.POSTERIOR),
    draws: Optional[int] = _draws(),
    seed: int = o.seed(),
    out: Optional[Path] = o.run_out(),
    overwrite: bool = o.overwrite(),
    as_json: bool = o.as_json(),
) -> None:
    """`fit --inference vi` with its posterior settings: variational posterior draws around the MAP."""
    job = FitJobConfig(data=_text(data), k=k, router=router, alpha=alpha, prior_scale=prior_scale,
                       router_prior_scale=router_prior_scale, validate_by=validate_by, k_max=k_max,
                       inference=Inference.VI, restarts=restarts, guide=guide, router_posterior=router_posterior,
                       draws=draws, test_fraction=test_fraction, seed=seed, out=_text(out), overwrite=overwrite)
    _emit(job, as_json)


@cli_errors
def fit_nuts_command(
    data: Optional[Path] = typer.Argument(None, help=DATA_HELP),
    test_fraction: float = o.test_fraction(),
    k: Optional[str] = o.k(K_HELP),
    router: Optional[str] = _router(),
    alpha: Optional[float] = _alpha(),
    prior_scale: Optional[float] = _prior_scale(),
    router_prior_scale: Optional[str] = _router_prior_scale(),
    validate_by: str = _validate_by(),
    k_max: int = o.k_max(),
    restarts: Optional[int] = o.restarts(),
    chains: int = typer.Option(1, "--chains", help="NUTS chains, run one after another; split-R̂ is reported with "
                               "2 or more.", rich_help_panel=o.POSTERIOR),
    draws: Optional[int] = _draws(),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up steps (default 100 with the Laplace mass "
                                         "matrix, 300 with adapt).", rich_help_panel=o.POSTERIOR,
                                         show_default="100 laplace, 300 adapt"),
    nuts_mass: str = o.choice("laplace", "--nuts-mass", NUTS_MASS, "Mass matrix: laplace (the Laplace covariance, "
                              "fixed; routed mixtures) | adapt (Pyro's diagonal adaptation).", o.POSTERIOR),
    seed: int = o.seed(),
    out: Optional[Path] = o.run_out(),
    overwrite: bool = o.overwrite(),
    as_json: bool = o.as_json(),
) -> None:
    """`fit --inference nuts` with its sampler settings: NUTS draws from the exact posterior."""
    job = FitJobConfig(data=_text(data), k=k, router=router, alpha=alpha, prior_scale=prior_scale,
                       router_prior_scale=router_prior_scale, validate_by=validate_by, k_max=k_max,
                       inference=Inference.NUTS, restarts=restarts, chains=chains, draws=draws, warmup=warmup,
                       nuts_mass=nuts_mass, test_fraction=test_fraction, seed=seed, out=_text(out),
                       overwrite=overwrite)
    _emit(job, as_json)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _emit(job: FitJobConfig, as_json: bool) -> None:
    """Run the job; its report on stdout with --json."""
    from bayesmicro import jobs

    report = jobs.run(job)
    if as_json:
        emit_json(report)
