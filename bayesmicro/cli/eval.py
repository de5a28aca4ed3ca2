"""``bayesmicro eval``: score a saved run on embedded pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import EVAL_SPLITS as SPLITS
from bayesmicro.config import EvalConfig


@cli_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs (folder or .npz)."),
    split: str = o.choice("test", "--split", SPLITS, "The pairs scored. DATA without a split column: the split "
                          "`fit` drew for the run (split.json), or all pairs when it drew none.", o.DATA),
    as_json: bool = o.as_json(),
) -> None:
    """Accuracy (decision rule P(chosen ≻ rejected) > ½), NLL and Brier score, overall and per group; ECE overall."""
    from bayesmicro import jobs

    result = jobs.run(EvalConfig(run=str(run_dir), data=str(data), split=split))
    if as_json:
        emit_json(result)
