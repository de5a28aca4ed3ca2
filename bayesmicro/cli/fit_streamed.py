"""``bayesmicro fit-store STORE``: a streamed MAP fit of a shard store (``bayesmicro.write_shards``), on the CPU or a
GPU. The command body builds a ``StoreFitConfig``; ``fit_streamed`` runs it (torch imported there, not at --help)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json, set_threads, stderr
from bayesmicro.config import StoreFitConfig
from bayesmicro.methods import Router

MANIFEST = "manifest.json"  # bayesmicro.data.shards.MANIFEST_FILE (checked equal in tests/cli)


def is_shard_store(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


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
    report = fit_streamed(job)
    if as_json:
        emit_json(report)


def fit_streamed(job: StoreFitConfig) -> dict:
    """Minibatch AdamW over every pair of the store (``StreamSchedule`` defaults for the settings not given); writes
    a run folder like any ``fit`` and reports the MAP objective — a store has no held-out pairs."""
    from bayesmicro._io import atomic_dir, check_output, write_json
    from bayesmicro.data.shards import ShardStore
    from bayesmicro.errors import BadInput
    from bayesmicro.infer.stream import StreamSchedule, fit_stream

    store_path, out = Path(job.data), None if job.out is None else Path(job.out)
    checkpoint_dir = None if job.checkpoint_dir is None else Path(job.checkpoint_dir)
    if out is not None:  # before any work
        check_output(out, "run", overwrite=job.overwrite, inputs=(store_path, checkpoint_dir))
    if not is_shard_store(store_path):
        raise BadInput("is not a shard store (no manifest.json): fit embedded pairs with `bayesmicro fit`",
                       source=str(store_path))
    schedule = {"lr": job.lr, "checkpoint_every": job.checkpoint_every if checkpoint_dir is not None else 0,
                **({} if job.epochs is None else {"epochs": job.epochs}),
                **({} if job.batch_size is None else {"batch_size": job.batch_size})}
    set_threads()
    fit = fit_stream(ShardStore(store_path), k=job.k, router=job.router, alpha=job.alpha,
                     prior_scale=job.prior_scale, router_prior_scale=job.router_prior_scale, seed=job.seed,
                     schedule=StreamSchedule(**schedule), device=job.device, checkpoint_dir=checkpoint_dir)
    report = {"streamed": {key: fit.summary[key] for key in (
        "train_pairs", "loss_per_pair", "epochs", "batch_size", "steps", "device", "fit_seconds", "pairs_per_second",
        "resumed_from_step")}, "k": fit.config.k, "router": fit.config.router}
    report["seconds"] = report["streamed"].pop("fit_seconds")
    if out is not None:
        report["out"] = str(out)
        with atomic_dir(out, "run", overwrite=job.overwrite, inputs=(store_path, checkpoint_dir)) as tmp:
            fit.write_into(tmp)
            job.write_into(tmp)
            write_json(tmp / "metrics.json", report)
    s = report["streamed"]
    rate = f", {s['pairs_per_second']:,.0f} pairs/s" if s["pairs_per_second"] else ""
    stderr.print(f"streamed {s['train_pairs']:,} pairs × {s['epochs']} epoch(s) on {s['device']} in "
                 f"{report['seconds']:.1f} s{rate}; MAP objective per pair {s['loss_per_pair']:.4f}. A shard store "
                 "holds no held-out pairs: score some with `bayesmicro eval RUN DATA`")
    return report
