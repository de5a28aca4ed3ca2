"""``bayesmicro eval``: score a saved run on embedded pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from bayesmicro.cli.common import cli_errors, emit_json, print_table
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.result import Fit


@cli_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs (folder or .npz)."),
    split: str = typer.Option("test", "--split", help="test | train | all (test/train need a split column)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy (decision rule P(chosen ≻ rejected) > ½), NLL and Brier score, overall and per group."""
    fitted = Fit.load(run_dir)
    pairs = EmbeddedPairs.load(data)
    if split != "all":
        pairs = pairs.part(split)
    result = score(fitted.predict_proba(pairs), pairs.group)
    print_table(f"{data} ({split})", {"model": result}, ("accuracy", "nll", "brier", "n"))
    if as_json:
        emit_json(result)
