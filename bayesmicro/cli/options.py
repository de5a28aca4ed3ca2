"""Options shared by several commands: one definition each, so the same option has the same name, default, help and
panel everywhere. Choices come from ``bayesmicro.methods``' enums and are listed in ``--help``; their values are
checked once, by the job config (``bayesmicro.config``), with the same message the Python API gives."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from bayesmicro.config import SEED, TEST_FRACTION

DATA, MODEL, CAPACITY, INFERENCE, POSTERIOR, OPTIMIZER, OUTPUT, RUN = (
    "Data", "Model", "Capacity (--k auto)", "Inference", "Posterior", "Optimizer (MAP)", "Output", "Run")


def choices(enum: type[Enum] | tuple[str, ...]) -> str:
    """The metavar that lists an option's choices: ``[map|vi|nuts|em]``."""
    return "[" + "|".join(str(getattr(member, "value", member)) for member in enum) + "]"


def choice(default: Any, flag: str, enum: type[Enum] | tuple[str, ...], help: str, panel: str,
           shown: str | bool = True) -> Any:
    """An option whose value is one of ``enum``'s (listed in --help; checked by the job config). ``shown``: the
    default as --help shows it, where it depends on other settings (the value is then None)."""
    value = getattr(default, "value", default)
    return typer.Option(value, flag, metavar=choices(enum), help=help, rich_help_panel=panel, show_default=shown)


def seed() -> Any:
    return typer.Option(SEED, "--seed", help="Random seed (splits, initialisation, restarts).", rich_help_panel=RUN)


def test_fraction(help: str = "Held-out share when DATA has no split column.") -> Any:
    return typer.Option(TEST_FRACTION, "--test-fraction", help=help, rich_help_panel=DATA)


def as_json() -> Any:
    return typer.Option(False, "--json", help="Print one JSON object on stdout (schema: docs/cli.md); tables, "
                        "messages and progress stay on stderr.", rich_help_panel=OUTPUT)


def overwrite(what: str = "an earlier run folder") -> Any:
    return typer.Option(False, "--overwrite", help=f"Replace --out when it is {what} (holding only what bayesmicro "
                        "wrote).", rich_help_panel=OUTPUT)


def run_out() -> Any:
    return typer.Option(None, "--out", help="Run folder to write (job, config, params, metrics): a new or empty "
                        "folder, or with --overwrite an earlier run folder.", rich_help_panel=OUTPUT)


def k(help: str, shown: str = "auto with DATA, else 3") -> Any:
    return typer.Option(None, "--k", help=help, rich_help_panel=MODEL, show_default=shown)


def k_max(help: str = "Largest K tried by --k auto.") -> Any:
    return typer.Option(5, "--k-max", help=help, rich_help_panel=CAPACITY)


def restarts(default: Any = None, help: str = "Random restarts; the best training log-likelihood wins.") -> Any:
    return typer.Option(default, "--restarts", help=help, rich_help_panel=INFERENCE,
                        show_default=True if default is not None else "3")

