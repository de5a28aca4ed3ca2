"""``bayesmicro eval``: score a saved run on embedded pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json, model_key, pairs_for_run, print_table, stderr
from bayesmicro.errors import BadInput

SPLITS = ("test", "train", "all")


@cli_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bayesmicro fit --out`."),
    data: Path = typer.Argument(..., help="Embedded pairs (folder or .npz)."),
    split: str = o.choice("test", "--split", SPLITS, "The pairs scored. DATA without a split column: the split "
                          "`fit` drew for the run (split.json), or all pairs when it drew none.", o.DATA),
    as_json: bool = o.as_json(),
) -> None:
    """Accuracy (decision rule P(chosen ≻ rejected) > ½), NLL and Brier score, overall and per group; ECE overall."""
    if split not in SPLITS:
        raise BadInput(f"--split must be test, train or all, got {split!r}")
    from bayesmicro.evaluate.calibration import ece
    from bayesmicro.evaluate.metrics import score
    from bayesmicro.infer.results.mixture import Fit

    fitted = Fit.load(run_dir)
    pairs, note = pairs_for_run(run_dir, data, fitted)
    evaluated_on = split if pairs.split is not None else "all"
    if evaluated_on != "all":
        pairs = pairs.part(split)
    elif split != "all" and note is None:
        stderr.print(f"{data} has no split column and {run_dir} recorded none: scoring all {len(pairs)} pairs")
    proba = fitted.predict_proba(pairs)
    result = {**score(proba, pairs.group), "ece": ece(proba), "evaluated_on": evaluated_on}
    label = model_key(fitted.config.k, fitted.config.router)
    print_table(f"{data} ({evaluated_on})", {label: result}, ("accuracy", "nll", "brier", "ece", "n"))
    if as_json:
        emit_json(result)
