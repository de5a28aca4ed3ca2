"""``bayesmicro diagnose``: ArviZ summary, PSIS-LOO with Pareto-k counts, calibration and a reliability plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import REDRAW_FACTOR, DiagnoseConfig


@cli_errors
def diagnose_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Optional[Path] = typer.Argument(None, help="Embedded pairs (default: the built-in population the run "
                                          "was fitted on)."),
    max_refits: Optional[int] = typer.Option(
        None, "--max-refits", help="Refit the model without each pair whose Pareto k > 0.7 (the worst N) and score "
        "it exactly (reloo); 0: PSIS only. Default 10, and 0 for NUTS runs (each refit repeats the sampling)."),
    redraw_factor: int = typer.Option(
        REDRAW_FACTOR, "--redraw-factor", help="VI runs on a routed mixture: first redo each pair whose Pareto "
        "k > 0.7 on this many times the run's draws (one replay of the fit) — PSIS on more draws of the same "
        "posterior (linearised / Laplace), mixture importance sampling on draws of the leave-one-out mixture "
        "(refined); 1: neither."),
    as_json: bool = o.as_json(),
) -> None:
    """PSIS-LOO on the training pairs, calibration on the held-out pairs, a reliability plot in RUN_DIR."""
    from bayesmicro import jobs

    report = jobs.run(DiagnoseConfig(run=str(run_dir), data=None if data is None else str(data),
                                     max_refits=max_refits, redraw_factor=redraw_factor))
    if as_json:
        emit_json(report)
