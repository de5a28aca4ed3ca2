"""``bayesmicro score``: posterior preference probabilities and rewards of a saved run, one row per pair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import ScoreConfig


@cli_errors
def score_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs (folder or .npz)."),
    quantiles: str = typer.Option("0.05,0.5,0.95", "--quantiles", help="Reward quantiles to report.",
                                  rich_help_panel=o.MODEL),
    level: float = typer.Option(0.9, "--level", help="Credible level of the P(chosen ≻ rejected) interval.",
                                rich_help_panel=o.MODEL),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the rows to FILE (.parquet or .jsonl); a new file, "
                                       "or with --overwrite an existing one.", rich_help_panel=o.OUTPUT),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file when it exists.",
                                   rich_help_panel=o.OUTPUT),
    as_json: bool = o.as_json(),
) -> None:
    """Posterior P(chosen ≻ rejected) with a credible interval and a risk-averse score, plus posterior reward
    quantiles of both responses — one row per pair (JSON lines on stdout unless --out or --json)."""
    from bayesmicro import jobs

    job = ScoreConfig(run=str(run_dir), data=str(data), quantiles=quantiles, level=level,
                      out=None if out is None else str(out), overwrite=overwrite)
    result = jobs.run(job)
    if as_json:
        emit_json(result)
    elif out is None:
        for row in result["rows"]:
            print(json.dumps(row))
