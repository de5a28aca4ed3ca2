"""``bayesmicro fit-store STORE``: a streamed MAP fit of a shard store (``bayesmicro.write_shards``), on the CPU or a
GPU. The command body builds a ``StoreFitConfig``; ``bayesmicro.jobs`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.config import StoreFitConfig
from bayesmicro.methods import Router

MANIFEST = "manifest.json"  # bayesmicro.data.shards.MANIFEST_FILE (checked equal in tests/cli; bayesmicro.jobs.store)


@cli_errors
def fit_store_command(
    data: Path = typer.Argument(..., help="A shard store (`bayesmicro embed --shards`, bayesmicro.write_shards): "
                                "read block by block, never whole."),
    k: str = typer.Option("3", "--k", help="Number of BT heads.", rich_help_panel=o.MODEL),
    router: str = o.choice(Router.PROMPT, "--router", Router, "What the router reads.", o.MODEL),
    alpha: float = typer.Option(0.5, "--alpha", help="Router-entropy regulariser α.", rich_help_panel=o.MODEL),
    prior_scale: float = typer.Option(1.0, "--prior-scale", help="sd of the Gaussian prior on head weights.",
                                      rich_help_panel=o.MODEL),
    router_prior_scale: str = typer.Option("0.3", "--router-prior-scale", help="sd of the Gaussian prior on the "
                                             "router network's weights.", rich_help_panel=o.MODEL),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="AdamW epochs.", show_default="1",
                                         rich_help_panel=o.OPTIMIZER),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="AdamW minibatch.", show_default="8192",
                                             rich_help_panel=o.OPTIMIZER),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW learning rate.", rich_help_panel=o.OPTIMIZER),
    device: str = typer.Option("cpu", "--device", metavar="[cpu|cuda[:i]]", help="Where the fit runs.",
                               rich_help_panel=o.RUN),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Checkpoint here every "
                                                  "--checkpoint-every steps and resume from the newest.",
                                                  rich_help_panel=o.RUN),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints.",
                                         rich_help_panel=o.RUN),
    seed: int = o.seed(),
    out: Optional[Path] = o.run_out(),
    overwrite: bool = o.overwrite(),
    as_json: bool = o.as_json(),
) -> None:
    """One streamed AdamW MAP fit over every pair of a shard store; reports the MAP objective (a store holds no
    held-out pairs: score some with `bayesmicro eval RUN DATA`)."""
    job = StoreFitConfig(data=str(data), k=k, router=router, alpha=alpha, prior_scale=prior_scale,
                         router_prior_scale=router_prior_scale, epochs=epochs, batch_size=batch_size, lr=lr,
                         device=device, checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
                         checkpoint_every=checkpoint_every, seed=seed, out=None if out is None else str(out),
                         overwrite=overwrite)
    from bayesmicro import jobs

    report = jobs.run(job)
    if as_json:
        emit_json(report)
