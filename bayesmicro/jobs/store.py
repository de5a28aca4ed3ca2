"""The ``fit-store`` job (``bayesmicro fit-store``, ``bayesmicro.run(StoreFitConfig(...))``): a streamed MAP fit of a
shard store (``bayesmicro.write_shards``), on the CPU or a GPU."""

from __future__ import annotations

from pathlib import Path

from bayesmicro.config import StoreFitConfig
from bayesmicro.jobs._common import set_threads, stderr

MANIFEST = "manifest.json"  # bayesmicro.data.shards.MANIFEST_FILE (checked equal in tests/cli)


def is_shard_store(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


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
