"""The ``eval`` job (``bayesmicro eval``, ``bayesmicro.run(EvalConfig(...))``): score a saved run on embedded pairs."""

from __future__ import annotations

from pathlib import Path

from bayesmicro.config import EvalConfig
from bayesmicro.jobs._common import model_key, pairs_for_run, print_table, stderr


def run_eval(job: EvalConfig) -> dict:
    """Accuracy, NLL and Brier score, overall and per group, and ECE overall, on ``job.split`` of ``job.data``."""
    from bayesmicro.evaluate.calibration import ece
    from bayesmicro.evaluate.metrics import score
    from bayesmicro.infer.results.mixture import Fit

    run_dir, data, split = Path(job.run), Path(job.data), job.split
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
    return result
