"""``bayesmicro export``: a run as a standard scalar reward model (transformers sequence classifier)."""

from __future__ import annotations

from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json, stderr
from bayesmicro.config import ExportConfig


@cli_errors
def export_command(
    run_dir: str = typer.Argument(..., help="Run folder (the --out of `bayesmicro fit`)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Hub id or folder of the backbone the features "
                                           "came from (default: the one the run records from `bayesmicro embed`)."),
    out: str = typer.Option(..., "--out", help="Folder to write (AutoModelForSequenceClassification loads it): a new "
                            "or empty folder, or with --overwrite an earlier export.", rich_help_panel=o.OUTPUT),
    overwrite: bool = o.overwrite("an earlier export"),
    context: Optional[str] = typer.Option(None, "--context", help="Route for this context text (a run routed on "
                                         "users or groups: one of their labels)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="'static': the static mixture weights."),
    prompt: str = typer.Option("", "--prompt", help="Prompt text for a context-routed run's router input."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Backbone revision on the hub."),
    json_out: bool = o.as_json(),
) -> None:
    """Write RUN_DIR as backbone + one linear score head Σ_k π_k w_k for the given context (or static weights);
    a mean-pooled run (the default encoder) loads with trust_remote_code=True."""
    from bayesmicro import jobs

    result = jobs.run(ExportConfig(run=run_dir, out=out, backbone=backbone, context=context, weights=weights,
                                   prompt=prompt, revision=revision, overwrite=overwrite))
    if json_out:
        emit_json(result)
    else:
        pi = ", ".join(f"{p:.3f}" for p in result["mixture_weights"])
        stderr.print(f"wrote {result['architecture']} to {result['out']} (π = [{pi}])")
        if result["trust_remote_code"]:
            stderr.print("load it with trust_remote_code=True: the folder carries the code of its mean-pooling head")
